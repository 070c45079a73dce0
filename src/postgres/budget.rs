//! The one bound on a storage's PostgreSQL connections: `storage.postgresql.pool.maxConnections`.
//!
//! Three kinds of connection reach the server: the bb8 pool of diesel-async connections (queries), raw
//! tokio-postgres clients for audit `COPY` (diesel-async has no COPY and does not lend its client), and the
//! dedicated connection a migration runs on (blocking, in a transaction holding an advisory lock). Each holds one
//! permit of this budget for as long as its socket is open: the permit travels with the connection's I/O future
//! ([`super::connect::connect_parts`]) and is released only when that future ends, after `Terminate` is sent
//! (and a short grace for the server's backend to exit: [`SERVER_GRACE`]).
//! So the plugin never has more than `maxConnections` connections open, whatever the mix. A connect that
//! failed before any socket opened releases its permit at once: no server backend exists to wait for.
//!
//! Every wait for a permit (and the pool's `get`) allows `acquireTimeout` plus that grace, so the grace never
//! fails a caller: a permit freed by a connection closed within `acquireTimeout` reaches the waiter in time.
//! With `maxConnections: 1` and a small `acquireTimeout` the connection opened by the next call therefore
//! waits at most `acquireTimeout` + 100 ms, not `acquireTimeout`.
//!
//! Idle connections of one kind must not starve the other: a caller that finds no permit free queues for one
//! first (the semaphore is fair, so what is freed next is its own), then closes one idle connection of the
//! other kind to make room — an idle COPY client for the pool, an idle pooled connection for COPY and
//! migrations. While someone waits, connections given back are closed instead of kept idle when only the other
//! kind can use them.
//!
//! A waiting pooled connect (a query) comes first: a COPY client given back while one waits is closed, never
//! handed to the next audit batch, so its permit goes through the fair semaphore and sustained audit load
//! cannot starve queries. A pooled connection given back is closed for a waiting COPY or migration only when
//! no pooled connect waits (else the query waiting would have to reconnect); a COPY or migration connect still
//! waiting therefore looks again every 50 ms for an idle pooled connection to close.
//!
//! The budget also keeps the pool's metrics ([`crate::metrics`]): every caller waiting for a connection — inside
//! the pool's `get` ([`Budget::pooled`]) or for a permit or idle client here ([`Budget::for_raw`]) — is counted in
//! [`Budget::waiting`] while it waits, and every such wait that gives up after `acquireTimeout` counts one
//! acquire timeout. The pool's own connects (bb8 opening a connection for a waiting caller) are not callers:
//! the caller they serve is already counted.

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

use diesel::ConnectionError;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use crate::{
    config::PoolConfig,
    error::{Error, Result},
    metrics::{Metrics, WaitGauge},
};

/// Permission to keep one server connection open. Dropped when the connection's I/O future ends; the permit
/// returns to the budget [`SERVER_GRACE`] later.
pub struct Slot(Option<OwnedSemaphorePermit>);

/// How long a closed connection's permit stays taken. The I/O future ends once `Terminate` is written, but the
/// server's backend exits a moment later (it must be scheduled to read it); without this grace a connection
/// opened in the freed slot could briefly make the server count one more than `maxConnections`. Waits for a
/// permit allow `acquireTimeout` plus this grace ([`Budget::wait`]).
pub const SERVER_GRACE: Duration = Duration::from_millis(100);

impl Slot {
    /// Frees the permit now, without the grace: for a connect that failed before a socket was opened.
    pub fn release_now(mut self) {
        drop(self.0.take());
    }
}

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

/// How often a COPY or migration connect still waiting looks again for an idle pooled connection to close.
const RECHECK_IDLE_POOLED: Duration = Duration::from_millis(50);

/// How long a caller short of a permit waits for an idle pooled connection to close for it.
const EVICT_WITHIN: Duration = Duration::from_millis(200);

pub struct Budget {
    permits: Arc<Semaphore>,
    max: u32,
    /// `acquireTimeout`, as configured (named in messages).
    acquire: Duration,
    /// How long a caller waits for a permit: `acquireTimeout` + [`SERVER_GRACE`].
    wait: Duration,
    /// Pooled connects waiting for a permit.
    want_pool: AtomicUsize,
    /// COPY and migration connects waiting for a permit.
    want_raw: AtomicUsize,
    /// Idle COPY clients (their permits held by their spawned I/O tasks).
    copy_idle: Mutex<Vec<Client>>,
    /// Signalled when a COPY client is given back.
    returned: Notify,
    /// Callers waiting for a connection right now (`parallax_storage_pool_waiting_requests`).
    waiting: WaitGauge,
    /// This storage's registry: waits that give up count as acquire timeouts.
    metrics: Arc<Metrics>,
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
    pub fn new(pool: &PoolConfig, metrics: Arc<Metrics>) -> Budget {
        let max = pool.max_connections.max(1);
        Budget {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            acquire: Duration::from_millis(pool.acquire_timeout_ms.max(1)),
            wait: wait(pool),
            want_pool: AtomicUsize::new(0),
            want_raw: AtomicUsize::new(0),
            copy_idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            waiting: WaitGauge::default(),
            metrics,
        }
    }

    /// Callers waiting for a connection right now: in the pool's `get` or for a permit of this budget.
    pub fn waiting(&self) -> u64 {
        self.waiting.get()
    }

    /// A pooled connection: the caller counts as waiting until the pool answers, and as an acquire timeout if it
    /// gives up (bb8's `connection_timeout` is [`wait`]).
    pub async fn pooled<'p>(
        &self,
        pool: &'p super::connect::Pool,
    ) -> std::result::Result<bb8::PooledConnection<'p, super::driven::Manager>, bb8::RunError<ConnectionError>>
    {
        let got = {
            let _waiting = self.waiting.enter();
            pool.get().await
        };
        if let Err(bb8::RunError::TimedOut) = got {
            self.metrics.pool_acquire_timed_out();
        }
        got
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

    /// Whether a pooled connect (a query) is waiting for a permit: it comes first.
    pub fn pool_waiting(&self) -> bool {
        self.want_pool.load(Ordering::SeqCst) > 0
    }

    fn busy(&self) -> Error {
        Error::new(
            parallax_storage_abi::ErrorKind::Timeout,
            format!(
                "no PostgreSQL connection free within {} ms: all {} connections allowed by \
                 storage.postgresql.pool.maxConnections are busy",
                self.acquire.as_millis(),
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
        let _counted = self.waiting.enter();
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
        // Pooled connections given back are kept while a pooled connect waits (the query comes first), so the
        // pool may end up holding every permit with none given back: look again for an idle one to close.
        let mut recheck = tokio::time::interval(RECHECK_IDLE_POOLED);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.reset();
        loop {
            tokio::select! {
                _ = recheck.tick(), if pool.is_some() => {
                    if let (Some(pool), false) = (pool, self.pool_waiting()) {
                        close_idle_pooled(pool).await;
                    }
                }
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
                () = deadline.as_mut() => {
                    self.metrics.pool_acquire_timed_out();
                    return Err(self.busy());
                }
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

    /// An extra connection for work that can also run on one the caller already holds (a cleanup's second
    /// lane): an idle COPY client, or a permit when no caller waits and [`SPARE_ROOM`] permits stay free
    /// for queries; never a wait. `None` when there is no such room.
    pub fn spare(&self) -> Option<Raw> {
        if let Some(client) = self.take_idle_copy() {
            return Some(Raw::Idle(client));
        }
        if self.pool_waiting() || self.raw_waiting() || self.permits.available_permits() <= SPARE_ROOM {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok().map(|p| Raw::New(Slot(Some(p))))
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

    /// Takes a COPY client back: kept for the next batch unless a pooled connect needs its permit. Even when
    /// audit batches wait too, the client is then closed: its permit returns to the fair semaphore, where the
    /// pooled connect queued before the batches that come after it.
    pub fn put_back_copy(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        if self.pool_waiting() {
            return; // dropped: closes, and its permit goes back to the semaphore's queue
        }
        let raw_waiting = self.raw_waiting();
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

/// Permits [`Budget::spare`] leaves free for the queries that may come while its connection is open.
const SPARE_ROOM: usize = 2;

/// How long a caller waits for a permit or a pooled connection: `acquireTimeout` + [`SERVER_GRACE`], so a
/// permit that a connection closed within `acquireTimeout` frees (after the grace) still reaches it.
pub fn wait(pool: &PoolConfig) -> Duration {
    Duration::from_millis(pool.acquire_timeout_ms.max(1)) + SERVER_GRACE
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

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicBool, time::Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn budget(max_connections: u32, acquire_timeout_ms: u64) -> Arc<Budget> {
        Arc::new(Budget::new(
            &PoolConfig { max_connections, acquire_timeout_ms, ..PoolConfig::default() },
            Arc::new(Metrics::new(&Default::default(), "postgresql")),
        ))
    }

    /// A client of a minimal in-memory "server" (it accepts the startup message, then reads until the client
    /// says goodbye), its connection driven by a task holding `slot`, as `connect::connect_raw` does.
    async fn fake_client(slot: Slot) -> Client {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut len = [0u8; 4];
            theirs.read_exact(&mut len).await.unwrap();
            let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            theirs.read_exact(&mut startup).await.unwrap();
            // AuthenticationOk, ReadyForQuery (idle).
            theirs.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I']).await.unwrap();
            let mut buf = [0u8; 64];
            while theirs.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let mut cfg = tokio_postgres::Config::new();
        cfg.user("u").ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, conn) = cfg.connect_raw(ours, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = conn.await;
        });
        client
    }

    #[tokio::test]
    async fn a_query_waiting_gets_a_permit_while_audit_batches_keep_giving_copy_clients_back() {
        // One connection for everything; two audit writers keep taking and returning COPY clients, so one of
        // them is always waiting when the other gives its client back.
        let budget = budget(1, 2_000);
        let stop = Arc::new(AtomicBool::new(false));
        let mut batches = Vec::new();
        for _ in 0..2 {
            let (budget, stop) = (budget.clone(), stop.clone());
            batches.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let client = match budget.for_raw(None, true).await {
                        Ok(Raw::Idle(client)) => client,
                        Ok(Raw::New(slot)) => fake_client(slot).await,
                        Err(_) => continue,
                    };
                    tokio::time::sleep(Duration::from_millis(2)).await; // the COPY
                    budget.put_back_copy(client);
                    tokio::task::yield_now().await;
                }
            }));
        }
        // Wait until one audit writer is queued behind the other (a state the two keep re-entering; checked by
        // polling, since at any single instant both may be between batches).
        let contended = Instant::now();
        while !budget.raw_waiting() {
            assert!(
                contended.elapsed() < Duration::from_secs(10),
                "the audit writers never contended for the one connection"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        let started = Instant::now();
        let slot = budget.for_pool().await;
        let waited = started.elapsed();
        assert!(slot.is_ok(), "the query got no permit within acquireTimeout + grace (waited {waited:?})");
        // Each client given back is closed; its permit returns after the grace and the query is queued
        // behind at most the one batch that was already waiting.
        assert!(waited < Duration::from_millis(1_000), "the query waited {waited:?}");
        assert!(!budget.pool_waiting());

        stop.store(true, Ordering::SeqCst);
        drop(slot);
        for batch in batches {
            batch.await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_grace_of_a_closed_connection_does_not_fail_a_waiter() {
        // maxConnections 1, acquireTimeout 50 ms: the only connection closes just as the next one is wanted;
        // its permit returns after SERVER_GRACE (100 ms), longer than acquireTimeout.
        let budget = budget(1, 50);
        let first = budget.for_new(None).await.unwrap();
        let started = Instant::now();
        drop(first);
        let second = budget.for_new(None).await;
        let waited = started.elapsed();
        assert!(second.is_ok(), "failed after {waited:?}");
        assert!(waited >= SERVER_GRACE, "the permit came back before the grace: {waited:?}");
        drop(second);

        let first = budget.for_new(None).await.unwrap();
        drop(first);
        let started = Instant::now();
        let pooled = budget.for_pool().await;
        assert!(pooled.is_ok(), "failed after {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_slot_released_now_skips_the_grace() {
        let budget = budget(1, 50);
        let slot = budget.for_new(None).await.unwrap();
        assert!(budget.exhausted());
        slot.release_now();
        assert!(!budget.exhausted(), "the permit is free at once");

        let slot = budget.for_new(None).await.unwrap();
        drop(slot);
        assert!(budget.exhausted(), "a closed connection's permit is kept for the grace");
        tokio::time::sleep(SERVER_GRACE + Duration::from_millis(50)).await;
        assert!(!budget.exhausted());
    }
}
