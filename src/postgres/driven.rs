//! Pooled connections driven by the call that uses them.
//!
//! tokio-postgres splits a connection into a `Client` (which queues requests) and a `Connection` future (which
//! writes them to the socket and hands back the answers). diesel-async normally spawns that future as a task
//! of its own, so every statement hops threads twice more: the caller wakes the connection task, the
//! connection task wakes the caller. Here the pool keeps the `Connection` future next to its client and the
//! call that holds the connection polls it ([`PgConn::run`]): a statement is written to the socket during
//! the caller's own poll, and the answer wakes the caller straight from the plugin runtime's I/O driver.
//!
//! An idle connection is polled by nobody. A server that closed it is noticed at the next checkout
//! ([`Manager::is_valid`] polls the connection once and reads the end of stream), provided the plugin
//! runtime's I/O driver has already seen the socket close, which normally takes moments; a call that races a
//! closing server fails once with `unavailable`, as before, and the pool then replaces the connection. A
//! connection leaving the pool hands its `Connection` future to the plugin runtime for a few seconds, to send
//! PostgreSQL the `Terminate` message.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use diesel::ConnectionError;
use diesel_async::{pooled_connection::PoolableConnection, AsyncPgConnection};

use super::connect::{self, ConnectSpec};
use crate::error::{Error, Result};
use parallax_storage_abi::ErrorKind;

/// How long a connection leaving the pool may take to say goodbye.
const TERMINATE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A tokio-postgres `Connection` future, whichever TLS stream it runs over.
pub type Driver = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// A diesel-async connection and the `Connection` future serving it. Holds no secrets.
pub struct PgConn {
    conn: AsyncPgConnection,
    /// `None` once the connection ended (server gone, I/O error): the pool then drops this connection.
    driver: Option<Driver>,
    /// Closed when given back, to free its slot of the connection budget ([`super::budget`]).
    retired: bool,
    /// `queryTimeout`: how long [`PgConn::run`] waits for the server.
    limit: Option<std::time::Duration>,
}

impl PgConn {
    /// Runs `f` with the connection while polling the connection's I/O in the same future, for at most
    /// `queryTimeout`: past it the work is dropped, the connection closed (its socket may hold half an answer,
    /// or none will ever come) and the call fails with `timeout`.
    pub async fn run<T>(&mut self, f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T>) -> Result<T> {
        let limit = self.limit;
        let PgConn { conn, driver, .. } = self;
        let work = Driven { work: std::pin::pin!(f(conn)), driver };
        let Some(limit) = limit else { return work.await };
        match tokio::time::timeout(limit, work).await {
            Ok(out) => out,
            Err(_) => {
                self.driver = None;
                self.retired = true;
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "PostgreSQL did not answer within {} ms (storage.postgresql.queryTimeout): the connection \
                         was closed; a write may or may not have been committed",
                        limit.as_millis()
                    ),
                ))
            }
        }
    }

    /// Whether the connection's I/O has ended.
    fn ended(&self) -> bool {
        self.driver.is_none()
    }

    /// Whether the connection is gone (server closed it, I/O failed, or diesel saw it break): an error a call
    /// got on it is a lost connection, whatever the driver called it.
    pub fn lost(&mut self) -> bool {
        self.ended() || self.conn.is_broken()
    }

    /// Makes the pool close this connection when it is given back.
    pub fn retire(&mut self) {
        self.retired = true;
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // The client (dropped right after this) queues `Terminate`; let the plugin runtime deliver it and
        // close the socket. Without a runtime (process exit) the socket is simply closed.
        // A hung server never answers: give up after a while and just close the socket.
        if let (Some(driver), Ok(handle)) = (self.driver.take(), tokio::runtime::Handle::try_current()) {
            let _detached = handle.spawn(async move {
                let _ = tokio::time::timeout(TERMINATE_WITHIN, driver).await;
            });
        }
    }
}

/// Polls the connection's I/O, then `work`, then the I/O again (to write what `work` just queued).
struct Driven<'a, W> {
    work: Pin<&'a mut W>,
    driver: &'a mut Option<Driver>,
}

impl<W: Future> Future for Driven<'_, W> {
    type Output = W::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<W::Output> {
        poll_driver(self.driver, cx);
        if let Poll::Ready(out) = self.work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        poll_driver(self.driver, cx);
        Poll::Pending
    }
}

/// Polls the `Connection` future once; drops it when it has ended, which fails the client's pending and
/// later requests ("connection closed") instead of leaving them waiting.
fn poll_driver(driver: &mut Option<Driver>, cx: &mut Context<'_>) {
    if let Some(d) = driver.as_mut() {
        if let Poll::Ready(outcome) = d.as_mut().poll(cx) {
            // The calls on it only learn "connection closed": say why here.
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "PostgreSQL connection lost; the pool will open a new one");
            }
            *driver = None;
        }
    }
}

/// Opens one connection whose `Connection` future is kept, not spawned.
async fn open(spec: &ConnectSpec, slot: super::budget::Slot) -> Result<PgConn, ConnectionError> {
    let (client, driver) = connect::connect_parts(spec, slot).await?;
    let mut driver = Some(driver);
    // Setting up the diesel connection runs statements: drive the socket meanwhile.
    let setup = Driven { work: std::pin::pin!(AsyncPgConnection::try_from(client)), driver: &mut driver };
    let conn = tokio::time::timeout(spec.connect_timeout, setup).await.map_err(|_| {
        ConnectionError::BadConnection(format!(
            "the server did not complete the session setup within {} ms (storage.postgresql.pool.acquireTimeout)",
            spec.connect_timeout.as_millis()
        ))
    })??;
    if driver.is_none() {
        return Err(ConnectionError::BadConnection("the connection closed while it was being set up".into()));
    }
    Ok(PgConn { conn, driver, retired: false, limit: spec.query_timeout })
}

/// The bb8 manager of [`PgConn`]s.
pub struct Manager {
    pub spec: Arc<ConnectSpec>,
}

impl bb8::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectionError;

    /// Takes a permit of the connection budget first: pooled connections count against
    /// `pool.maxConnections` together with COPY and migration connections.
    async fn connect(&self) -> Result<PgConn, ConnectionError> {
        let slot =
            self.spec.budget.for_pool().await.map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        open(&self.spec, slot).await
    }

    /// Called at every checkout. Costs no round trip: it polls the idle connection's I/O once, which reads
    /// anything the server sent while the connection sat in the pool — end of stream if the server closed
    /// it, so a connection from before a server restart is replaced instead of failing the call.
    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectionError> {
        std::future::poll_fn(|cx| {
            poll_driver(&mut conn.driver, cx);
            Poll::Ready(())
        })
        .await;
        if conn.ended() || conn.conn.is_broken() {
            return Err(ConnectionError::BadConnection("the server closed the connection".into()));
        }
        Ok(())
    }

    /// Also drops a connection given back while a panic unwinds (the call may have stopped anywhere), one
    /// retired to make room, and any while a COPY or migration waits for a slot of the budget and no pooled
    /// connect does (a query waiting gets this connection instead of reconnecting).
    fn has_broken(&self, conn: &mut PgConn) -> bool {
        let budget = &self.spec.budget;
        conn.lost()
            || conn.retired
            || (budget.raw_waiting() && !budget.pool_waiting())
            || std::thread::panicking()
    }
}
