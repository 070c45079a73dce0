//! Backend calls polled on the caller's thread instead of being spawned onto the plugin runtime: an answer wakes
//! the caller directly, not a plugin worker that would wake the caller in turn.
//!
//! The work is polled with the plugin runtime entered (so it can spawn, use the blocking pool, timers and the
//! runtime's I/O driver) and panics are caught as a spawned task's would be. Three things differ from
//! handing the host's waker straight to the work:
//!
//! - The work sees one plugin-owned waker for its whole life ([`CallWaker`]). The host's waker comes through
//!   the FFI as a new object at every poll, so every registration the work makes (socket readiness, channels,
//!   the pool) would clone it through the FFI; now only the call clones it, once per poll, and a finished call
//!   forgets it, so idle resources that still hold the work's waker (a pooled connection's socket) do not keep
//!   the host's task alive or wake it.
//! - A wake-up that arrives while the work is being polled (the work's own I/O answering it on this thread)
//!   makes the work be polled again at once instead of rescheduling the host's task.
//! - After the plugin runtime has been shut down the work is not polled again (its timers would panic): the
//!   call ends with `unavailable`, as a spawned call's cancellation does.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Wake, Waker},
};

use tokio::runtime::Handle;

use crate::error::{Error, Result};

fn cancelled(op: &str) -> Error {
    Error::unavailable(format!("{op} was cancelled: the storage is shutting down"))
}

/// How often one host poll re-polls work that woke itself before yielding to the host's scheduler.
const MAX_REPOLLS: usize = 32;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

/// The waker the work registers. Forwards to the host's current waker, except while the work is being
/// polled: then it only records the wake-up and the poll loop polls again.
struct CallWaker {
    state: AtomicU8,
    host: Mutex<Option<Waker>>,
}

impl Wake for CallWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                POLLING => match self.state.compare_exchange_weak(
                    POLLING,
                    WOKEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => state = now,
                },
                WOKEN => return,
                _ => {
                    // Seen idle: the poller has finished (or not started) its poll, so the host must poll again.
                    if let Some(host) = self.host.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        host.wake_by_ref();
                    }
                    return;
                }
            }
        }
    }
}

/// A backend future polled by the caller. Dropped unfinished, it hands the rest of the work to the plugin
/// runtime, so a write the caller stopped waiting for still completes, as a spawned call would.
pub struct OnCaller<T: Send + 'static> {
    work: Option<Pin<Box<dyn Future<Output = Result<T>> + Send>>>,
    handle: Handle,
    op: &'static str,
    /// Set just before the plugin runtime shuts down.
    stopped: Arc<AtomicBool>,
    wake: Arc<CallWaker>,
    waker: Waker,
}

impl<T: Send + 'static> OnCaller<T> {
    pub fn new(
        work: Pin<Box<dyn Future<Output = Result<T>> + Send>>,
        handle: Handle,
        op: &'static str,
        stopped: Arc<AtomicBool>,
    ) -> Self {
        let wake = Arc::new(CallWaker { state: AtomicU8::new(IDLE), host: Mutex::new(None) });
        let waker = Waker::from(wake.clone());
        OnCaller { work: Some(work), handle, op, stopped, wake, waker }
    }

    /// Drops the work here, with the runtime entered and panics contained (a future that panicked may panic
    /// again while dropped).
    fn drop_work(&mut self) {
        let work = self.work.take();
        let _entered = self.handle.enter();
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(work)));
        *self.wake.host.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl<T: Send + 'static> Future for OnCaller<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        if this.work.is_none() {
            return Poll::Ready(Err(Error::internal(format!("{} was polled after it finished", this.op))));
        }
        if this.stopped.load(Ordering::Acquire) {
            this.drop_work();
            return Poll::Ready(Err(cancelled(this.op)));
        }
        {
            let mut host = this.wake.host.lock().unwrap_or_else(|p| p.into_inner());
            if !host.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *host = Some(cx.waker().clone());
            }
        }
        let outcome = {
            let _entered = this.handle.enter();
            let mut inner = Context::from_waker(&this.waker);
            let Some(work) = this.work.as_mut() else { unreachable!("checked above") };
            let mut outcome = None;
            for _ in 0..MAX_REPOLLS {
                this.wake.state.store(POLLING, Ordering::Release);
                let polled = std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(&mut inner)));
                match polled {
                    Ok(Poll::Pending) => {
                        let idle = this.wake.state.compare_exchange(
                            POLLING,
                            IDLE,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        if idle.is_ok() {
                            return Poll::Pending;
                        }
                        // Woken while being polled: poll again now.
                    }
                    Ok(Poll::Ready(r)) => {
                        outcome = Some(r);
                        break;
                    }
                    Err(_) if this.stopped.load(Ordering::Acquire) => {
                        outcome = Some(Err(cancelled(this.op)));
                        break;
                    }
                    Err(payload) => {
                        outcome = Some(Err(Error::from_panic(payload, this.op)));
                        break;
                    }
                }
            }
            this.wake.state.store(IDLE, Ordering::Release);
            outcome
        };
        match outcome {
            Some(r) => {
                this.drop_work();
                Poll::Ready(r)
            }
            None => {
                // Still waking itself after many polls: let the host run other tasks first.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl<T: Send + 'static> Drop for OnCaller<T> {
    fn drop(&mut self) {
        if self.work.is_none() {
            return;
        }
        if self.stopped.load(Ordering::Acquire) {
            self.drop_work();
            return;
        }
        *self.wake.host.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(work) = self.work.take() {
            let _detached = self.handle.spawn(async move {
                let _ = work.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the host's wake-ups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    fn call<F: Future<Output = Result<u32>> + Send + 'static>(
        rt: &tokio::runtime::Runtime,
        work: F,
    ) -> (OnCaller<u32>, Arc<AtomicBool>) {
        let stopped = Arc::new(AtomicBool::new(false));
        (OnCaller::new(Box::pin(work), rt.handle().clone(), "test", stopped.clone()), stopped)
    }

    fn poll(c: &mut OnCaller<u32>, host: &Arc<Count>) -> Poll<Result<u32>> {
        let waker = Waker::from(host.clone());
        Pin::new(c).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn work_that_wakes_itself_while_polled_is_polled_again_without_the_host() {
        let rt = runtime();
        let mut polls = 0;
        let (mut c, _) = call(
            &rt,
            std::future::poll_fn(move |cx| {
                polls += 1;
                if polls < 3 {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(polls))
                }
            }),
        );
        let host = Arc::new(Count(AtomicUsize::new(0)));
        assert!(matches!(poll(&mut c, &host), Poll::Ready(Ok(3))));
        assert_eq!(host.0.load(Ordering::SeqCst), 0, "no host wake-up for a self-wake during the poll");
    }

    #[test]
    fn a_later_wake_up_reaches_the_host_and_a_finished_call_forgets_it() {
        let rt = runtime();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let (mut c, _) = call(&rt, async move { rx.await.map_err(|_| Error::internal("dropped")) });
        let host = Arc::new(Count(AtomicUsize::new(0)));
        assert!(poll(&mut c, &host).is_pending());
        let work_waker = c.waker.clone();
        std::thread::spawn(move || tx.send(7).unwrap()).join().unwrap();
        assert_eq!(host.0.load(Ordering::SeqCst), 1);
        assert!(matches!(poll(&mut c, &host), Poll::Ready(Ok(7))));
        // Something still holding the work's waker (an idle socket) no longer reaches the host.
        work_waker.wake();
        assert_eq!(host.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_call_polled_after_the_runtime_stopped_is_cancelled_not_polled() {
        let rt = runtime();
        let (mut c, stopped) = call(&rt, async {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            Ok(1)
        });
        let host = Arc::new(Count(AtomicUsize::new(0)));
        assert!(poll(&mut c, &host).is_pending());
        stopped.store(true, Ordering::Release);
        rt.shutdown_background();
        match poll(&mut c, &host) {
            Poll::Ready(Err(e)) => assert!(e.to_string().contains("shutting down"), "{e}"),
            other => panic!("expected a cancellation, got {:?}", other.map(|r| r.map_err(|e| e.to_string()))),
        }
    }
}
