//! The thread behind a single-writer backend (SQLite, the file store): it owns the backend's write state, takes
//! every queued write job at once (up to a limit) and hands them to the backend as one group, so that they share
//! one commit; "solo" jobs (migrations, format upgrades) run alone between groups. Callers wait for their answer
//! on a oneshot channel, sent by the backend after the group's commit.

use std::{
    sync::Mutex,
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

pub enum Msg<G, S> {
    /// A write that may share a commit with others.
    Group(G),
    /// Runs alone, between groups.
    Solo(S),
}

/// What the thread does with its state `C`.
pub struct Handlers<C, G, S> {
    pub group: fn(&mut C, &mut Vec<G>),
    pub solo: fn(&mut C, S),
}

/// Adaptive group commit: when fewer jobs are queued than the previous group answered, the thread waits a
/// little (at most the previous commit's duration, capped at [`MAX_LINGER`]) for those callers to come back,
/// since one commit of many jobs costs about as much as a commit of one. A lone caller (previous group of one)
/// never waits; a shortfall shrinks the next wait's goal, so the waiting follows the real concurrency.
pub struct WriterThread<G, S> {
    tx: Mutex<Option<mpsc::Sender<Msg<G, S>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Woken after each send, in case the thread is waiting for more jobs.
    waker: Thread,
    /// For messages: "the SQLite writer", "the file store writer".
    what: &'static str,
}

impl<G: Send + 'static, S: Send + 'static> WriterThread<G, S> {
    pub fn start<C: Send + 'static>(
        what: &'static str,
        thread_name: &str,
        mut state: C,
        handlers: Handlers<C, G, S>,
    ) -> Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Msg<G, S>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || {
                let mut group: Vec<G> = Vec::with_capacity(MAX_GROUP);
                let mut pending_solo: Option<S> = None;
                // The previous group: how many callers it answered (they are likely to write again) and how
                // long its commit took (the most worth waiting for them).
                let mut last_size = 0usize;
                let mut last_commit = Duration::ZERO;
                loop {
                    if let Some(solo) = pending_solo.take() {
                        (handlers.solo)(&mut state, solo);
                    }
                    let Some(first) = rx.blocking_recv() else { return };
                    match first {
                        Msg::Solo(solo) => {
                            (handlers.solo)(&mut state, solo);
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
                    (handlers.group)(&mut state, &mut group);
                    last_commit = started.elapsed();
                    group.clear();
                }
            })
            .map_err(|e| Error::internal(format!("cannot start {what} thread: {e}")))?;
        let waker = thread.thread().clone();
        Ok(WriterThread { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), waker, what })
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
    /// Lets the queued jobs finish, then stops the thread (blocking until it has).
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl<G, S> Drop for WriterThread<G, S> {
    fn drop(&mut self) {
        self.stop();
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
