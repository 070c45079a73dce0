//! The one bound on a storage's PostgreSQL connections: `storage.postgresql.pool.maxConnections`.
//!
//! Three kinds of connection reach the server: the bb8 pool of diesel-async connections (queries), raw
//! tokio-postgres clients for audit `COPY` (diesel-async has no COPY and does not lend its client), and the
//! dedicated connection a migration runs on (blocking, in a transaction holding an advisory lock). Each holds one
//! permit of this budget for as long as its socket is open: the permit travels with the connection's I/O future
//! ([`super::connect::connect_parts`]) and is released only when that future ends, after `Terminate` is sent
//! (and a short grace for the server's backend to exit: [`SERVER_GRACE`]).
//! So the plugin never has more than `maxConnections` connections open, whatever the mix.
//!
//! Idle connections of one kind must not starve the other: a caller that finds no permit free queues for one
//! first (the semaphore is fair, so what is freed next is its own), then closes one idle connection of the
//! other kind to make room — an idle COPY client for the pool, an idle pooled connection for COPY and
//! migrations. While someone waits, connections given back are closed instead of kept idle when only the other
//! kind can use them.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::Poll,
    time::Duration,
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use crate::{
    config::PoolConfig,
    error::{Error, Result},
};

/// Permission to keep one server connection open. Dropped when the connection's I/O future ends; the permit
/// returns to the budget [`SERVER_GRACE`] later.
pub struct Slot(Option<OwnedSemaphorePermit>);

/// How long a closed connection's permit stays taken. The I/O future ends once `Terminate` is written, but the
/// server's backend exits a moment later (it must be scheduled to read it); without this grace a connection
/// opened in the freed slot could briefly make the server count one more than `maxConnections`.
const SERVER_GRACE: Duration = Duration::from_millis(100);

impl Drop for Slot {
    fn drop(&mut self) {
        if let (Some(permit), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            let _detached = rt.spawn(async move {
                tokio::time::sleep(SERVER_GRACE).await;
                drop(permit);
            });
        }
    }
}

/// Most idle COPY clients kept between audit batches.
const COPY_IDLE: usize = 2;

/// How long a caller short of a permit waits for an idle pooled connection to close for it.
const EVICT_WITHIN: Duration = Duration::from_millis(200);

pub struct Budget {
    permits: Arc<Semaphore>,
    max: u32,
    wait: Duration,
    /// Pooled connects waiting for a permit.
    want_pool: AtomicUsize,
    /// COPY and migration connects waiting for a permit.
    want_raw: AtomicUsize,
    /// Idle COPY clients (their permits held by their spawned I/O tasks).
    copy_idle: Mutex<Vec<Client>>,
    /// Signalled when a COPY client is given back.
    returned: Notify,
}

/// What [`Budget::for_raw`] found: an idle COPY client to reuse, or a permit to open a new connection with.
pub enum Raw {
    Idle(Client),
    New(Slot),
}

/// Counts a waiter while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Budget {
    pub fn new(pool: &PoolConfig) -> Budget {
        let max = pool.max_connections.max(1);
        Budget {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            wait: Duration::from_millis(pool.acquire_timeout_ms.max(1)),
            want_pool: AtomicUsize::new(0),
            want_raw: AtomicUsize::new(0),
            copy_idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
        }
    }

    /// Whether every permit is taken (the pool's timeout message says which limit was hit).
    pub fn exhausted(&self) -> bool {
        self.permits.available_permits() == 0
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Whether a COPY or migration connect is waiting: a pooled connection given back is then closed.
    pub fn raw_waiting(&self) -> bool {
        self.want_raw.load(Ordering::SeqCst) > 0
    }

    fn busy(&self) -> Error {
        Error::new(
            parallax_storage_abi::ErrorKind::Timeout,
            format!(
                "no PostgreSQL connection free within {} ms: all {} connections allowed by \
                 storage.postgresql.pool.maxConnections are busy",
                self.wait.as_millis(),
                self.max
            ),
        )
    }

    /// A permit for a new pooled connection (bb8's `connect`), closing an idle COPY client if that makes room.
    pub async fn for_pool(&self) -> Result<Slot> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Slot(Some(permit)));
        }
        let _waiting = Waiting::new(&self.want_pool);
        let mut acquire = std::pin::pin!(self.permits.clone().acquire_owned());
        if let Poll::Ready(permit) = poll_once(acquire.as_mut()).await {
            return permit.map(|p| Slot(Some(p))).map_err(|_| self.busy());
        }
        self.close_idle_copy();
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(Slot(Some(permit))),
            _ => Err(self.busy()),
        }
    }

    /// For COPY (`reuse`: an idle COPY client will do) or a migration: an idle client or a permit to open one.
    /// Closes an idle connection of the other kind when that makes room.
    pub async fn for_raw(&self, pool: Option<&super::connect::Pool>, reuse: bool) -> Result<Raw> {
        if reuse {
            if let Some(client) = self.take_idle_copy() {
                return Ok(Raw::Idle(client));
            }
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Raw::New(Slot(Some(permit))));
        }
        let _waiting = Waiting::new(&self.want_raw);
        let mut acquire = std::pin::pin!(self.permits.clone().acquire_owned());
        if let Poll::Ready(permit) = poll_once(acquire.as_mut()).await {
            return permit.map(|p| Raw::New(Slot(Some(p)))).map_err(|_| self.busy());
        }
        if !reuse {
            self.close_idle_copy();
        }
        if let Some(pool) = pool {
            close_idle_pooled(pool).await;
        }
        let deadline = tokio::time::sleep(self.wait);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                permit = acquire.as_mut() => return permit.map(|p| Raw::New(Slot(Some(p)))).map_err(|_| self.busy()),
                () = self.returned.notified() => {
                    if reuse {
                        if let Some(client) = self.take_idle_copy() {
                            return Ok(Raw::Idle(client));
                        }
                    } else {
                        self.close_idle_copy();
                    }
                }
                () = deadline.as_mut() => return Err(self.busy()),
            }
        }
    }

    /// A permit for a new connection that is not pooled (a migration; the one at open), closing an idle
    /// connection of either kind if that makes room.
    pub async fn for_new(&self, pool: Option<&super::connect::Pool>) -> Result<Slot> {
        match self.for_raw(pool, false).await? {
            Raw::New(slot) => Ok(slot),
            Raw::Idle(_) => unreachable!("for_raw(reuse: false) never hands out an idle client"),
        }
    }

    fn take_idle_copy(&self) -> Option<Client> {
        let mut idle = self.copy_idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|c| !c.is_closed());
        idle.pop()
    }

    /// Closes one idle COPY client; its permit is freed once its I/O task has sent `Terminate`.
    fn close_idle_copy(&self) {
        drop(self.take_idle_copy());
    }

    /// Takes a COPY client back: kept for the next batch unless a pooled connect needs its permit.
    pub fn put_back_copy(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        let raw_waiting = self.raw_waiting();
        if !raw_waiting && self.want_pool.load(Ordering::SeqCst) > 0 {
            return; // dropped: closes, and its permit goes to the waiting pooled connect
        }
        {
            let mut idle = self.copy_idle.lock().unwrap_or_else(|p| p.into_inner());
            if !raw_waiting && idle.len() >= COPY_IDLE {
                return;
            }
            idle.push(client);
        }
        self.returned.notify_one();
    }
}

/// Polls `f` once.
async fn poll_once<F: Future>(mut f: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
}

/// Closes one idle pooled connection, if the pool has one: checks it out and retires it, so bb8 drops it when
/// it comes back.
async fn close_idle_pooled(pool: &super::connect::Pool) {
    if pool.state().idle_connections == 0 {
        return;
    }
    if let Ok(Ok(mut conn)) = tokio::time::timeout(EVICT_WITHIN, pool.get()).await {
        conn.retire();
    }
}
