//! The thread behind a single-writer backend (SQLite, the file store): it owns the backend's write state, takes
//! every queued write job at once (up to a limit) and hands them to the backend as one group, so that they share
//! one commit; "solo" jobs (migrations, format upgrades) run alone between groups. Callers wait for their answer
//! on a oneshot channel, sent by the backend after the group's commit.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{mpsc as std_mpsc, Mutex},
    thread::{JoinHandle, Thread},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Most jobs handed over as one group.
const MAX_GROUP: usize = 512;
/// Queue depth before callers wait (back-pressure instead of unbounded memory).
const QUEUE: usize = 8192;
/// Longest wait for more jobs before a group runs (see [`WriterThread`]).
const MAX_LINGER: Duration = Duration::from_millis(2);
/// How long dropping a [`WriterThread`] waits for the thread to end before leaving it to finish on its own.
/// An idle thread ends in microseconds, so an idle store is fully closed (SQLite connection closed, file store
/// lock released) when the drop returns and can be reopened at once; a thread still committing queued writes
/// is not waited for (see the `Drop` impl).
const DROP_GRACE: Duration = Duration::from_millis(20);

pub enum Msg<G, S> {
    /// A write that may share a commit with others.
    Group(G),
    /// Runs alone, between groups.
    Solo(S),
}

/// What the thread does with its state `C`.
pub struct Handlers<C, G, S> {
    /// Runs and commits a group, answering every job (and leaving `group` empty).
    pub group: fn(&mut C, &mut Vec<G>),
    /// Answers a job of a group whose handler panicked before answering it (the error is `Panicked`).
    pub fail: fn(G, Error),
    pub solo: fn(&mut C, S),
    /// Puts the state back in order after a handler panicked (SQLite: rolls back a transaction the panic
    /// left open), so that the next group starts clean.
    pub recover: fn(&mut C),
}

/// Adaptive group commit: when fewer jobs are queued than the previous group answered, the thread waits a
/// little (at most the previous commit's duration, capped at [`MAX_LINGER`]) for those callers to come back,
/// since one commit of many jobs costs about as much as a commit of one. A lone caller (previous group of one)
/// never waits; a shortfall shrinks the next wait's goal, so the waiting follows the real concurrency.
///
/// A panic in a handler never ends the thread: the jobs it left unanswered get a `Panicked` error,
/// [`Handlers::recover`] runs, and the next group goes on as usual.
pub struct WriterThread<G, S> {
    tx: Mutex<Option<mpsc::Sender<Msg<G, S>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Disconnected once the thread has ended and dropped its state.
    ended: Mutex<Option<std_mpsc::Receiver<()>>>,
    /// Woken after each send, in case the thread is waiting for more jobs.
    waker: Thread,
    /// For messages: "the SQLite writer", "the file store writer".
    what: &'static str,
}

impl<G: Send + 'static, S: Send + 'static> WriterThread<G, S> {
    pub fn start<C: Send + 'static>(
        what: &'static str,
        thread_name: &str,
        state: C,
        handlers: Handlers<C, G, S>,
    ) -> Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Msg<G, S>>(QUEUE);
        let (ended_tx, ended) = std_mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || {
                // Declared first, so dropped last: the thread counts as ended only once `state` is gone.
                let _ended = ended_tx;
                let mut state = state;
                let mut group: Vec<G> = Vec::with_capacity(MAX_GROUP);
                let mut pending_solo: Option<S> = None;
                // The previous group: how many callers it answered (they are likely to write again) and how
                // long its commit took (the most worth waiting for them).
                let mut last_size = 0usize;
                let mut last_commit = Duration::ZERO;
                loop {
                    if let Some(solo) = pending_solo.take() {
                        run_solo_guarded(what, &handlers, &mut state, solo);
                    }
                    let Some(first) = rx.blocking_recv() else { return };
                    match first {
                        Msg::Solo(solo) => {
                            run_solo_guarded(what, &handlers, &mut state, solo);
                            continue;
                        }
                        Msg::Group(job) => group.push(job),
                    }
                    let linger = (group.len() < last_size).then(|| last_commit.min(MAX_LINGER));
                    let deadline = linger.map(|d| Instant::now() + d);
                    loop {
                        if !drain(&mut rx, &mut group, &mut pending_solo) {
                            break; // closed: run what we have, then the next receive ends the thread
                        }
                        let Some(deadline) = deadline else { break };
                        let now = Instant::now();
                        if group.len() >= last_size || pending_solo.is_some() || now >= deadline {
                            break;
                        }
                        std::thread::park_timeout(deadline - now);
                    }
                    last_size = group.len();
                    let started = Instant::now();
                    run_group_guarded(what, &handlers, &mut state, &mut group);
                    last_commit = started.elapsed();
                    group.clear();
                }
            })
            .map_err(|e| Error::internal(format!("cannot start {what} thread: {e}")))?;
        let waker = thread.thread().clone();
        Ok(WriterThread {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            ended: Mutex::new(Some(ended)),
            waker,
            what,
        })
    }

    pub async fn send(&self, msg: Msg<G, S>) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let tx = tx.ok_or_else(|| Error::unavailable(format!("{} is shut down", self.what)))?;
        tx.send(msg).await.map_err(|_| Error::unavailable(format!("{} has stopped", self.what)))?;
        self.waker.unpark();
        Ok(())
    }

    /// Waits for the answer to a job sent with [`WriterThread::send`].
    pub async fn answer<T>(&self, rx: tokio::sync::oneshot::Receiver<Result<T>>) -> Result<T> {
        rx.await.map_err(|_| Error::unavailable(format!("{} stopped before answering", self.what)))?
    }
}

/// Runs a group; if the handler panics, the jobs it did not answer get a `Panicked` error naming the panic,
/// and the state is recovered for the next group.
fn run_group_guarded<C, G, S>(what: &str, handlers: &Handlers<C, G, S>, state: &mut C, group: &mut Vec<G>) {
    let Err(payload) = catch_unwind(AssertUnwindSafe(|| (handlers.group)(state, group))) else { return };
    let panic = Error::from_panic(payload, &format!("{what}'s group commit"));
    let error = Error::panicked(format!(
        "{}; none of the group's {} unanswered write(s) was acknowledged (retry them); the writer goes on",
        panic.0.message,
        group.len()
    ));
    tracing::error!(error = %panic, jobs = group.len(), "{what} panicked in a group commit; it recovers and goes on");
    recover(what, handlers, state);
    for job in group.drain(..) {
        (handlers.fail)(job, error.clone());
    }
}

/// Runs a solo job (which answers its caller itself, see [`run_solo`]); a panic that escapes it is logged and
/// the state recovered.
fn run_solo_guarded<C, G, S>(what: &str, handlers: &Handlers<C, G, S>, state: &mut C, solo: S) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (handlers.solo)(state, solo))) {
        let panic = Error::from_panic(payload, &format!("{what}'s solo job"));
        tracing::error!(error = %panic, "{what} panicked in a solo job; it recovers and goes on");
        recover(what, handlers, state);
    }
}

fn recover<C, G, S>(what: &str, handlers: &Handlers<C, G, S>, state: &mut C) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (handlers.recover)(state))) {
        let panic = Error::from_panic(payload, &format!("{what}'s recovery"));
        tracing::error!(error = %panic, "{what} panicked while recovering from a panic");
    }
}

/// Moves every queued message into the group (up to [`MAX_GROUP`]), stopping at a solo job, which is kept for
/// after the group. Returns false once the channel is closed and empty.
fn drain<G, S>(rx: &mut mpsc::Receiver<Msg<G, S>>, group: &mut Vec<G>, solo: &mut Option<S>) -> bool {
    while group.len() < MAX_GROUP && solo.is_none() {
        match rx.try_recv() {
            Ok(Msg::Group(job)) => group.push(job),
            Ok(Msg::Solo(s)) => *solo = Some(s),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

impl<G, S> WriterThread<G, S> {
    /// Lets the queued jobs finish, then stops the thread (blocking until it has and its state is dropped).
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// Dropping without [`WriterThread::stop`] (the last storage object dropped without `shutdown()`, perhaps in
/// an async task) must not block the caller while queued writes drain: the queue is closed, and the thread
/// commits everything already queued, then drops its state (closing the SQLite connection, releasing the file
/// store's lock) and ends on its own. The caller waits at most [`DROP_GRACE`], so an idle writer is fully gone
/// when the drop returns. Every write acknowledged before the drop was durable before its answer; queued
/// ones are committed by the detached thread as long as the process lives (`shutdown()` waits for them).
impl<G, S> Drop for WriterThread<G, S> {
    fn drop(&mut self) {
        self.tx.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        let Some(thread) = self.thread.get_mut().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let ended = self.ended.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        match ended.map(|rx| rx.recv_timeout(DROP_GRACE)) {
            Some(Err(std_mpsc::RecvTimeoutError::Timeout)) => {
                tracing::info!(
                    "{} was dropped without shutdown() while still committing; it finishes the queued writes \
                     in the background",
                    self.what
                );
                drop(thread); // detached
            }
            _ => {
                let _ = thread.join();
            }
        }
    }
}

/// Runs a solo job, turning a panic into a `Panicked` answer.
pub fn run_solo<C, T>(
    ctx: &mut C,
    what: &'static str,
    f: impl FnOnce(&mut C) -> Result<T>,
    done: tokio::sync::oneshot::Sender<Result<T>>,
) {
    let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ctx))) {
        Ok(r) => r,
        Err(payload) => Err(Error::from_panic(payload, what)),
    };
    let _ = done.send(r);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use parallax_storage_abi::ErrorKind;
    use tokio::sync::oneshot;

    use super::*;

    /// A job: a number to commit, and its caller's answer.
    struct Job(u32, oneshot::Sender<Result<u32>>);

    /// What the test writer owns: the committed numbers (shared with the test), how long a commit takes,
    /// and a signal sent when a group starts.
    struct State {
        committed: Arc<Mutex<Vec<u32>>>,
        commit_takes: Duration,
        started: std_mpsc::Sender<usize>,
        recovered: Arc<Mutex<u32>>,
    }

    /// Commits the group; a job numbered 13 makes the whole group panic before anything is answered.
    fn commit(state: &mut State, group: &mut Vec<Job>) {
        let _ = state.started.send(group.len());
        if group.iter().any(|j| j.0 == 13) {
            panic!("injected failure in the commit of job 13");
        }
        std::thread::sleep(state.commit_takes);
        state.committed.lock().unwrap().extend(group.iter().map(|j| j.0));
        for Job(n, done) in group.drain(..) {
            let _ = done.send(Ok(n));
        }
    }

    fn handlers() -> Handlers<State, Job, ()> {
        Handlers {
            group: commit,
            fail: |Job(_, done), e| {
                let _ = done.send(Err(e));
            },
            solo: |_, ()| {},
            recover: |s| *s.recovered.lock().unwrap() += 1,
        }
    }

    /// The writer, what it committed, its "group started" signals, and how often it recovered.
    type Started = (WriterThread<Job, ()>, Arc<Mutex<Vec<u32>>>, std_mpsc::Receiver<usize>, Arc<Mutex<u32>>);

    fn start(commit_takes: Duration) -> Started {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let recovered = Arc::new(Mutex::new(0));
        let (started, started_rx) = std_mpsc::channel();
        let state =
            State { committed: committed.clone(), commit_takes, started, recovered: recovered.clone() };
        let w = WriterThread::start("the test writer", "test-writer", state, handlers()).unwrap();
        (w, committed, started_rx, recovered)
    }

    async fn write(w: &WriterThread<Job, ()>, n: u32) -> Result<u32> {
        let (done, answer) = oneshot::channel();
        w.send(Msg::Group(Job(n, done))).await?;
        w.answer(answer).await
    }

    #[tokio::test]
    async fn a_panicking_group_fails_alone_and_the_writer_goes_on() {
        let (w, committed, _started, recovered) = start(Duration::ZERO);
        assert_eq!(write(&w, 1).await.unwrap(), 1);

        let err = write(&w, 13).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
        let msg = err.0.message.to_string();
        assert!(msg.contains("the test writer's group commit"), "{msg}");
        assert!(msg.contains("injected failure in the commit of job 13"), "{msg}");
        assert!(msg.contains("the writer goes on"), "{msg}");
        assert_eq!(*recovered.lock().unwrap(), 1, "the state is recovered after the panic");

        // Later writes are committed as usual.
        for n in 2..=4 {
            assert_eq!(write(&w, n).await.unwrap(), n);
        }
        assert_eq!(*committed.lock().unwrap(), [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn dropping_does_not_wait_for_a_slow_group_and_loses_no_write() {
        let slow = Duration::from_millis(1500);
        let (w, committed, started, _) = start(slow);
        // One group in flight, four more writes queued behind it; their callers are gone (as after a cancelled
        // call), so only the writer itself can commit them.
        let (done, _answer) = oneshot::channel();
        w.send(Msg::Group(Job(1, done))).await.unwrap();
        assert_eq!(started.recv_timeout(Duration::from_secs(10)).unwrap(), 1, "the first group has started");
        for n in 2..=5 {
            let (done, _) = oneshot::channel();
            w.send(Msg::Group(Job(n, done))).await.unwrap();
        }

        let dropping = Instant::now();
        drop(w);
        let took = dropping.elapsed();
        assert!(took < slow / 4, "dropping waited {took:?} for a group that takes {slow:?}");

        // The thread commits the queued writes on its own, then drops its state and ends.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&committed) > 1 {
            assert!(Instant::now() < deadline, "the writer thread did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*committed.lock().unwrap(), [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn dropping_an_idle_writer_ends_it_before_returning() {
        let (w, committed, _started, _) = start(Duration::ZERO);
        assert_eq!(write(&w, 7).await.unwrap(), 7);
        drop(w);
        // The state (for the file store: its lock) is gone once the drop returns, so the store can be reopened.
        assert_eq!(Arc::strong_count(&committed), 1);
        assert_eq!(*committed.lock().unwrap(), [7]);
    }
}
