//! The thread behind a single-writer backend (SQLite, the file store): it owns the backend's write state, takes
//! every queued write job at once (up to a limit) and hands them to the backend as one group, so that they share
//! one commit; "solo" jobs (migrations, format upgrades) run alone between groups. Callers wait for their answer
//! on a oneshot channel ([`Answer`]), sent by the backend after the group's commit.
//!
//! For the metrics ([`crate::metrics::PoolState`]) the writer counts as one connection: [`WriterThread::load`]
//! says whether it is running a group or solo job, and how many jobs are queued that it has not taken yet.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{JoinHandle, Thread},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Most jobs handed over as one group.
const MAX_GROUP: usize = 512;
/// Queue depth before callers wait (back-pressure instead of unbounded memory).
const QUEUE: usize = 8192;
/// Longest wait for more jobs before a group runs (see [`WriterThread`]).
const MAX_LINGER: Duration = Duration::from_millis(2);

pub enum Msg<G, S> {
    /// A write that may share a commit with others.
    Group(G),
    /// Runs alone, between groups.
    Solo(S),
}

/// What the thread does with its state `C`.
pub struct Handlers<C, G, S> {
    /// Runs and commits a group, answering every job (and leaving `group` empty). A panic may escape it only
    /// while none of the jobs left in `group` can have been written: [`Handlers::fail`] tells their callers
    /// to retry them.
    pub group: fn(&mut C, &mut Vec<G>),
    /// Answers a job of a group whose handler panicked before answering it (the error is `Panicked`, and says
    /// that the write was not acknowledged and can be retried).
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
    /// Jobs queued or in flight: counted from before they are queued until just before they are answered (see
    /// [`Answer`]). Zero when the writer is idle, which is when dropping it waits for its thread to end.
    busy: Arc<AtomicUsize>,
    /// Woken after each send, in case the thread is waiting for more jobs.
    waker: Thread,
    /// For messages: "the SQLite writer", "the file store writer".
    what: &'static str,
    /// What the metrics read (see [`WriterThread::load`]).
    gauges: Arc<Gauges>,
}

/// The writer's load for the metrics, kept with atomics only so that a scrape never waits for the writer.
#[derive(Debug, Default)]
struct Gauges {
    /// Jobs submitted (from before they enter the queue, which may be full) that the thread has not taken.
    queued: AtomicU64,
    /// Whether the thread is running a job: from taking the first job of a group (or a solo job) until the
    /// group's answers are sent.
    running: AtomicBool,
}

/// A snapshot of the writer's load ([`WriterThread::load`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Running a group (or a solo job) right now.
    pub running: bool,
    /// Writes submitted that the writer has not started.
    pub queued: u64,
}

/// Counts one submitted job in [`Gauges::queued`] until it is queued (the thread then stops counting it when
/// it takes the job) or the submission fails or is cancelled.
struct Submitting<'a>(&'a AtomicU64);

impl Drop for Submitting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<G: Send + 'static, S: Send + 'static> WriterThread<G, S> {
    pub fn start<C: Send + 'static>(
        what: &'static str,
        thread_name: &str,
        state: C,
        handlers: Handlers<C, G, S>,
    ) -> Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Msg<G, S>>(QUEUE);
        let gauges = Arc::new(Gauges::default());
        let g = gauges.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || {
                let mut state = state;
                let mut group: Vec<G> = Vec::with_capacity(MAX_GROUP);
                let mut pending_solo: Option<S> = None;
                // The previous group: how many callers it answered (they are likely to write again) and how
                // long its commit took (the most worth waiting for them).
                let mut last_size = 0usize;
                let mut last_commit = Duration::ZERO;
                loop {
                    if let Some(solo) = pending_solo.take() {
                        g.took(1);
                        run_solo_guarded(what, &handlers, &mut state, solo);
                        g.running.store(false, Ordering::Relaxed);
                    }
                    let Some(first) = rx.blocking_recv() else { return };
                    g.took(1);
                    match first {
                        Msg::Solo(solo) => {
                            run_solo_guarded(what, &handlers, &mut state, solo);
                            g.running.store(false, Ordering::Relaxed);
                            continue;
                        }
                        Msg::Group(job) => group.push(job),
                    }
                    let linger = (group.len() < last_size).then(|| last_commit.min(MAX_LINGER));
                    let deadline = linger.map(|d| Instant::now() + d);
                    loop {
                        if !drain(&mut rx, &mut group, &mut pending_solo, &g) {
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
                    g.running.store(false, Ordering::Relaxed);
                }
            })
            .map_err(|e| Error::internal(format!("cannot start {what} thread: {e}")))?;
        let waker = thread.thread().clone();
        Ok(WriterThread {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            busy: Arc::new(AtomicUsize::new(0)),
            waker,
            what,
            gauges,
        })
    }

    /// The writer's load right now (atomics only: never waits for the writer).
    pub fn load(&self) -> Load {
        Load {
            running: self.gauges.running.load(Ordering::Relaxed),
            queued: self.gauges.queued.load(Ordering::Relaxed),
        }
    }

    /// A channel for the answer to one job, to be sent with the job: the writer counts as busy from now
    /// until the answer is sent (or the job dropped unanswered).
    pub fn reply<T>(&self) -> (Answer<T>, oneshot::Receiver<Result<T>>) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        let (done, rx) = oneshot::channel();
        (Answer { done, _busy: Busy(self.busy.clone()) }, rx)
    }

    pub async fn send(&self, msg: Msg<G, S>) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let tx = tx.ok_or_else(|| Error::unavailable(format!("{} is shut down", self.what)))?;
        // Counted from before the send, which waits while the queue is full; once queued, the thread stops
        // counting the job when it takes it (possibly before `send` returns, so the guard is forgotten).
        self.gauges.queued.fetch_add(1, Ordering::Relaxed);
        let submitting = Submitting(&self.gauges.queued);
        tx.send(msg).await.map_err(|_| Error::unavailable(format!("{} has stopped", self.what)))?;
        std::mem::forget(submitting);
        self.waker.unpark();
        Ok(())
    }

    /// Waits for the answer to a job sent with [`WriterThread::send`].
    pub async fn answer<T>(&self, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        rx.await.map_err(|_| Error::unavailable(format!("{} stopped before answering", self.what)))?
    }
}

/// Where a job's answer goes (from [`WriterThread::reply`]). It keeps the writer counted as busy until the
/// answer is sent, and stops counting *before* sending it: a caller that has its answer and drops the writer
/// finds it idle (unless other jobs are pending), so the drop waits for the thread to end.
pub struct Answer<T> {
    done: oneshot::Sender<Result<T>>,
    _busy: Busy,
}

impl<T> Answer<T> {
    pub fn send(self, result: Result<T>) {
        let Answer { done, _busy } = self;
        drop(_busy);
        let _ = done.send(result);
    }
}

/// One job counted in [`WriterThread::busy`]; dropping it stops counting.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

impl Gauges {
    /// The thread took `n` jobs off the queue: they are no longer waiting, and the writer is running.
    fn took(&self, n: u64) {
        self.running.store(true, Ordering::Relaxed);
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Moves every queued message into the group (up to [`MAX_GROUP`]), stopping at a solo job, which is kept for
/// after the group (and still counted as queued until it runs). Returns false once the channel is closed and
/// empty.
fn drain<G, S>(
    rx: &mut mpsc::Receiver<Msg<G, S>>,
    group: &mut Vec<G>,
    solo: &mut Option<S>,
    gauges: &Gauges,
) -> bool {
    while group.len() < MAX_GROUP && solo.is_none() {
        match rx.try_recv() {
            Ok(Msg::Group(job)) => {
                gauges.took(1);
                group.push(job)
            }
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
/// an async task) must not block the caller while queued writes drain: see [`WriterThread::close`].
impl<G, S> Drop for WriterThread<G, S> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<G, S> WriterThread<G, S> {
    /// Closes the queue without blocking on queued writes: the thread commits everything already queued, then
    /// drops its state (closing the SQLite connection, releasing the file store's lock) and ends on its own.
    /// An idle writer (no job queued or in flight, see [`Answer`]) is always waited for: with the queue closed
    /// its thread ends at once, so the store is fully closed when this returns and can be reopened, however
    /// loaded the machine. A busy one is left to finish in the background. Every write acknowledged before was
    /// durable before its answer; queued ones are committed by the detached thread as long as the process lives
    /// (`shutdown()` waits for them).
    ///
    /// Called when the storage object is dropped (`Contract::close_on_drop`) as well as by this type's `Drop`:
    /// the backend itself may outlive the storage object for a moment (a finished call's task still holds it
    /// until the runtime's worker drops that task), and the store must not stay locked for that moment.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        // No job can be added now (the queue is closed), so this only goes down.
        let busy = self.busy.load(Ordering::Acquire);
        if busy == 0 {
            let _ = thread.join();
        } else {
            tracing::info!(
                jobs = busy,
                "{} was dropped without shutdown() while still committing; it finishes the queued writes in the \
                 background",
                self.what
            );
            drop(thread); // detached
        }
    }
}

/// Runs a solo job, turning a panic into a `Panicked` answer.
pub fn run_solo<C, T>(ctx: &mut C, what: &'static str, f: impl FnOnce(&mut C) -> Result<T>, done: Answer<T>) {
    let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ctx))) {
        Ok(r) => r,
        Err(payload) => Err(Error::from_panic(payload, what)),
    };
    done.send(r);
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc as std_mpsc, Arc, Mutex};

    use parallax_storage_abi::ErrorKind;

    use super::*;

    /// A job: a number to commit, and its caller's answer.
    struct Job(u32, Answer<u32>);

    /// What the test writer owns: the committed numbers (shared with the test), how long a commit takes,
    /// a signal sent when a group starts, and how long closing takes (as a SQLite connection or a file store
    /// lock may, on a loaded machine).
    struct State {
        committed: Arc<Mutex<Vec<u32>>>,
        commit_takes: Duration,
        started: std_mpsc::Sender<usize>,
        recovered: Arc<Mutex<u32>>,
        close_takes: Duration,
    }

    impl Drop for State {
        fn drop(&mut self) {
            std::thread::sleep(self.close_takes);
        }
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
            done.send(Ok(n));
        }
    }

    fn handlers() -> Handlers<State, Job, ()> {
        Handlers {
            group: commit,
            fail: |Job(_, done), e| done.send(Err(e)),
            solo: |_, ()| {},
            recover: |s| *s.recovered.lock().unwrap() += 1,
        }
    }

    /// The writer, what it committed, its "group started" signals, and how often it recovered.
    type Started = (WriterThread<Job, ()>, Arc<Mutex<Vec<u32>>>, std_mpsc::Receiver<usize>, Arc<Mutex<u32>>);

    fn start(commit_takes: Duration) -> Started {
        start_closing_in(commit_takes, Duration::ZERO)
    }

    fn start_closing_in(commit_takes: Duration, close_takes: Duration) -> Started {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let recovered = Arc::new(Mutex::new(0));
        let (started, started_rx) = std_mpsc::channel();
        let state = State {
            committed: committed.clone(),
            commit_takes,
            started,
            recovered: recovered.clone(),
            close_takes,
        };
        let w = WriterThread::start("the test writer", "test-writer", state, handlers()).unwrap();
        (w, committed, started_rx, recovered)
    }

    async fn write(w: &WriterThread<Job, ()>, n: u32) -> Result<u32> {
        let (done, answer) = w.reply();
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
        let (done, _answer) = w.reply();
        w.send(Msg::Group(Job(1, done))).await.unwrap();
        assert_eq!(started.recv_timeout(Duration::from_secs(10)).unwrap(), 1, "the first group has started");
        for n in 2..=5 {
            let (done, _) = w.reply();
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

    /// However long the thread takes to end (closing its state here takes far longer than any grace period a
    /// timing-based drop could afford), an idle writer is waited for: its state (for the file store: its lock)
    /// is gone once the drop returns, so the store can be reopened at once.
    #[tokio::test]
    async fn dropping_an_idle_writer_ends_it_before_returning() {
        for _ in 0..3 {
            let (w, committed, _started, _) = start_closing_in(Duration::ZERO, Duration::from_millis(300));
            assert_eq!(write(&w, 7).await.unwrap(), 7);
            drop(w);
            assert_eq!(Arc::strong_count(&committed), 1, "the idle writer's thread was left running");
            assert_eq!(*committed.lock().unwrap(), [7]);
        }
    }

    /// The metrics' view of the writer: running while a group commits, the jobs queued behind it counted as
    /// waiting until the writer takes them, and both back to idle once everything is answered.
    #[tokio::test]
    async fn load_counts_the_running_group_and_the_jobs_queued_behind_it() {
        let (w, _committed, started, _) = start(Duration::from_millis(800));
        assert_eq!(w.load(), Load { running: false, queued: 0 });
        let (done, first) = w.reply();
        w.send(Msg::Group(Job(1, done))).await.unwrap();
        assert_eq!(started.recv_timeout(Duration::from_secs(10)).unwrap(), 1, "the first group has started");
        let mut answers = Vec::new();
        for n in 2..=5 {
            let (done, answer) = w.reply();
            w.send(Msg::Group(Job(n, done))).await.unwrap();
            answers.push(answer);
        }
        assert_eq!(w.load(), Load { running: true, queued: 4 }, "one group running, four jobs behind it");

        assert_eq!(w.answer(first).await.unwrap(), 1);
        for (n, answer) in (2..=5).zip(answers) {
            assert_eq!(w.answer(answer).await.unwrap(), n);
        }
        // The answers are sent just before the thread marks itself idle.
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.load() != (Load { running: false, queued: 0 }) {
            assert!(Instant::now() < deadline, "the writer still looks busy: {:?}", w.load());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A submission that fails (the writer is shut down) or is cancelled while it waits for room in a full
    /// queue is not left counted as queued.
    #[tokio::test]
    async fn a_failed_or_cancelled_submission_is_not_counted_as_queued() {
        let (w, _committed, started, _) = start(Duration::from_secs(2));
        let (done, _first) = w.reply();
        w.send(Msg::Group(Job(100_000, done))).await.unwrap();
        assert_eq!(started.recv_timeout(Duration::from_secs(10)).unwrap(), 1, "the first group has started");
        for n in 1..=QUEUE as u32 {
            let (done, _) = w.reply();
            w.send(Msg::Group(Job(100_000 + n, done))).await.unwrap();
        }
        assert_eq!(w.load(), Load { running: true, queued: QUEUE as u64 }, "the queue is full");
        let (done, _) = w.reply();
        let send = tokio::time::timeout(Duration::from_millis(50), w.send(Msg::Group(Job(1, done)))).await;
        assert!(send.is_err(), "a send into a full queue waits (and is cancelled here)");
        assert_eq!(w.load().queued, QUEUE as u64, "the cancelled submission is not counted");
        drop(w); // busy: the thread finishes the queued jobs in the background

        let (w, _committed, _started, _) = start(Duration::ZERO);
        w.stop();
        let (done, _answer) = w.reply();
        assert!(w.send(Msg::Group(Job(1, done))).await.is_err());
        assert_eq!(w.load().queued, 0);
    }

    /// A job whose caller went away before it was queued does not leave the writer counted as busy.
    #[tokio::test]
    async fn an_answer_dropped_unsent_does_not_keep_the_writer_busy() {
        let (w, committed, _started, _) = start_closing_in(Duration::ZERO, Duration::from_millis(300));
        let (done, answer) = w.reply::<u32>();
        drop((done, answer));
        assert_eq!(write(&w, 1).await.unwrap(), 1);
        drop(w);
        assert_eq!(Arc::strong_count(&committed), 1, "the idle writer's thread was left running");
    }
}
