//! The PostgreSQL backend: diesel-async connections in a bb8 pool, TLS through rustls, embedded migrations run
//! under an advisory lock, monthly `executions` partitions kept ahead of time, full-text search.
//!
//! Every connection (pooled, audit `COPY`, migration) counts against `pool.maxConnections` (`budget.rs`; a
//! closed connection's slot returns 100 ms later, so waits for a connection allow `acquireTimeout` + 100 ms);
//! health and migration status read through pooled connections. Messages, logs and `Health.location` name the
//! server as `user@host:port/database`, built from the parsed settings; anything quoting the settings or the
//! driver goes through `ConnectSpec::redact` (`connect.rs`).
//!
//! Metrics (`metrics.rs`): the pool's state from bb8 plus the budget's count of callers waiting for a connection,
//! acquire timeouts counted where a wait gives up (`budget.rs`), table rows and bytes from one catalog query run
//! by the background refresher; no disk free space (the server's disk is not visible to a client).

mod archive;
mod budget;
mod chain;
mod connect;
mod copy;
mod driven;
mod metrics;
mod migrations;
mod models;
mod partitions;
mod queries;
mod replicas;
mod retention;
mod statements;
mod transfer;
#[rustfmt::skip]
pub mod schema;

/// The test PostgreSQL server of `tests/common` (a throwaway cluster per test process, or
/// `PARALLAX_TEST_POSTGRES_URL`), shared with the integration tests; one per test process for every module here.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/common/pg.rs"]
mod test_pg;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use diesel_async::AsyncPgConnection;
use parallax_storage_abi::OpenOptions;

pub use self::statements::{lifecycle_sql, search_executions_sql};
use self::{
    connect::{ConnectSpec, Pool},
    replicas::{Freshness, Replica, Replicas, Target},
};
use crate::{
    config::{PostgresConfig, StorageConfig},
    error::{Error, Result},
};

pub use migrations::embedded_versions;

pub struct PostgresBackend {
    cfg: StorageConfig,
    pg: PostgresConfig,
    spec: Arc<ConnectSpec>,
    pool: Pool,
    /// Raw clients for `COPY` (audit batches).
    copy: copy::CopyPool,
    /// The task keeping partitions created ahead; aborted at shutdown.
    maintenance: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// This storage's registry, shared with the connection budget (which counts waits and acquire timeouts).
    metrics: Arc<crate::metrics::Metrics>,
    /// The read replicas and the router's state (empty without `storage.postgresql.replicas`).
    replicas: Arc<Replicas>,
    /// This storage object's read-your-writes mark ([`replicas::Freshness`]).
    fresh: Arc<Freshness>,
    /// The replicas' health task (only while reads may go to replicas); aborted at shutdown.
    health: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PostgresBackend {
    pub async fn open(cfg: StorageConfig, options: OpenOptions) -> Result<Self> {
        let pg = cfg.postgresql.clone().ok_or_else(|| {
            Error::invalid("config: storage.type is postgresql but storage.postgresql is not set")
        })?;
        let metrics = Arc::new(crate::metrics::Metrics::new(&cfg.metrics, "postgresql"));
        let (spec, replica_specs) = connect::specs(&pg, metrics.clone())?;
        let spec = Arc::new(spec);
        // One direct connection first: a clear error if the server is unreachable or refuses us. It takes a
        // slot of the budget like every other connection (nothing else is open yet).
        let slot = spec.budget.for_new(None).await?;
        let conn = connect::connect(&spec, slot).await?;
        // Whether this open changed the schema (then reads wait for a replica that has it, below).
        let mut changed_schema = false;
        let schema_ready = if options.maintenance {
            false
        } else {
            let auto_run = cfg.migrations.enabled && cfg.migrations.auto_run;
            let tracking =
                !pg.replicas.is_empty() && pg.read_preference != crate::config::ReadPreference::Primary;
            changed_schema = migrations::with_wrapper(conn, move |w| {
                let pending = if tracking {
                    crate::migrate::pending(&crate::migrate::status(w, &migrations::MIGRATIONS)?).len()
                } else {
                    0
                };
                crate::migrate::check(w, &migrations::MIGRATIONS, auto_run)?;
                Ok(pending > 0)
            })
            .await?;
            true
        };
        let pool = connect::pool(spec.clone(), &pg);
        let reads_on_replicas = pg.read_preference != crate::config::ReadPreference::Primary;
        let list = replica_specs
            .into_iter()
            .map(|s| {
                let s = Arc::new(s);
                // No pool (and no connection) for a replica that receives no reads.
                let pool = reads_on_replicas.then(|| connect::replica_pool(s.clone(), &pg));
                Replica::new(s, pool)
            })
            .collect();
        let replicas = Arc::new(Replicas::new(
            list,
            pg.read_preference,
            pg.max_replica_lag_ms,
            replicas::host_port(&spec.pg),
        ));
        let fresh = Arc::new(Freshness::new(
            spec.clone(),
            pool.clone(),
            replicas::probe_timeout(pg.pool.acquire_timeout_ms),
        ));
        let copy =
            copy::CopyPool::new(spec.clone(), pool.clone(), replicas.tracking().then(|| fresh.clone()));
        let backend = PostgresBackend {
            cfg,
            pg,
            spec,
            pool,
            copy,
            maintenance: Mutex::new(None),
            metrics,
            replicas,
            fresh,
            health: Mutex::new(None),
        };
        if schema_ready {
            let made =
                partitions::ensure(&backend.pool, &backend.spec, backend.pg.partition_months_ahead).await?;
            if made > 0 {
                changed_schema = true;
                tracing::info!(created = made, "created executions partitions ahead of time");
            }
            // Entries written before the audit chain existed are chained once, by the first open that may
            // write (a maintenance open writes nothing).
            backend.chain_legacy().await?;
            *backend.maintenance.lock().unwrap_or_else(|p| p.into_inner()) = Some(partitions::keep_ahead(
                backend.pool.clone(),
                backend.spec.clone(),
                backend.pg.partition_months_ahead,
            ));
        }
        // Replicas start unknown (no reads) and the task probes them at once: open never waits for a standby.
        if backend.replicas.tracking() {
            if changed_schema {
                // The schema as this open left it must be on a replica before it serves this object.
                backend.mark_now();
            }
            *backend.health.lock().unwrap_or_else(|p| p.into_inner()) = Some(replicas::spawn(
                backend.replicas.clone(),
                backend.fresh.clone(),
                backend.spec.clone(),
                backend.pool.clone(),
                backend.pg.pool.acquire_timeout_ms,
            ));
        }
        tracing::info!(location = %backend.spec.location, "PostgreSQL storage opened");
        Ok(backend)
    }

    /// A pooled connection, or `Timeout` (pool exhausted) / `Unavailable` (server unreachable) within the
    /// configured acquireTimeout. Counted as a waiting request while it waits, and as an acquire timeout when it
    /// gives up ([`budget::Budget::pooled`]).
    async fn conn(&self) -> Result<bb8::PooledConnection<'_, driven::Manager>> {
        self.conn_on(&self.spec, &self.pool).await
    }

    /// [`PostgresBackend::conn`] on any host's pool.
    async fn conn_on<'p>(
        &self,
        spec: &ConnectSpec,
        pool: &'p Pool,
    ) -> Result<bb8::PooledConnection<'p, driven::Manager>> {
        match spec.budget.pooled(pool).await {
            Ok(c) => Ok(c),
            Err(bb8::RunError::User(e)) => Err(spec.cannot_connect(e)),
            Err(bb8::RunError::TimedOut) => {
                let state = pool.state();
                let ms = self.pg.pool.acquire_timeout_ms;
                if state.connections >= self.pg.pool.max_connections || spec.budget.exhausted() {
                    Err(Error::new(
                        parallax_storage_abi::ErrorKind::Timeout,
                        format!(
                            "no PostgreSQL connection free within {ms} ms: all {} connections are busy ({} \
                             pooled, the rest audit COPY or migrations; storage.postgresql.pool.maxConnections)",
                            spec.budget.max(),
                            state.connections
                        ),
                    ))
                } else {
                    Err(Error::unavailable(format!(
                        "PostgreSQL at {} did not accept a connection within {ms} ms (server down or \
                         unreachable?)",
                        spec.location
                    )))
                }
            }
        }
    }

    /// Runs `f` with a pooled connection, driving the connection's I/O in the same future
    /// ([`driven::PgConn::run`]). An error is given its kind here, where the connection's state is known:
    /// `unavailable` if the connection is gone, `schema` if the statement failed because migrations are
    /// pending (diesel-async keeps no SQLSTATE, so the database is asked).
    async fn with_conn<T>(&self, f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn().await?;
        let out = conn.run(f).await;
        self.classify(&self.spec, &mut conn, out).await
    }

    /// [`PostgresBackend::with_conn`] for a write: while reads may go to replicas, a write that finished
    /// (committed, or failed after it was sent: it may have committed) is counted for this object's
    /// read-your-writes mark ([`Freshness::wrote`]), which a coalescing marker then takes off the write's path
    /// when a read needs it.
    /// Refusals (not found, conflict, invalid input) changed nothing and are not counted. Without replicas,
    /// exactly `with_conn`.
    async fn with_write<T>(&self, f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T>) -> Result<T> {
        if !self.replicas.tracking() {
            return self.with_conn(f).await;
        }
        let mut conn = self.conn().await?;
        let out = conn.run(f).await;
        let maybe_committed = match &out {
            Ok(_) => true,
            Err(e) => conn.lost() || e.kind() == parallax_storage_abi::ErrorKind::Unavailable,
        };
        if maybe_committed {
            self.fresh.wrote();
        }
        self.classify(&self.spec, &mut conn, out).await
    }

    /// Counts work that committed on other connections (migrations, cleanup, archive) as a write of this object
    /// (see [`PostgresBackend::with_write`]). Only while tracking.
    fn mark_now(&self) {
        if self.replicas.tracking() {
            self.fresh.wrote();
        }
    }

    /// [`PostgresBackend::mark_now`] when the returned guard drops: at the end of work that commits in steps on
    /// other connections (archive deletes and imports), also when it fails or its future is dropped half-way.
    fn counts_as_write(&self) -> CountsAsWrite<'_> {
        CountsAsWrite(self)
    }

    /// A plain read (the ten routed contract reads): on the host [`Replicas::pick`] chooses. A read that fails on
    /// a replica for a reason other than its answer (connection, timeout, a server error such as a conflict with
    /// recovery) is retried once on the primary: a replica never makes a read fail while the primary answers.
    /// The replica's checkout waits at most `acquireTimeout`, and never more than a second.
    async fn with_read<T>(&self, f: impl AsyncFn(&mut AsyncPgConnection) -> Result<T>) -> Result<T> {
        if self.replicas.tracking() {
            self.fresh.cover();
        }
        let target = self.replicas.pick(&self.fresh).0;
        if let Target::Replica(r) = target {
            if let Some(pool) = &r.pool {
                match self.read_on(r, pool, &f).await {
                    Ok(answer) => {
                        r.health.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return answer;
                    }
                    Err(e) => {
                        tracing::debug!(replica = %r.host, error = %e, "read failed on a replica; retrying on the primary");
                        self.replicas.count_fallback(replicas::Fallback::Error);
                    }
                }
            }
        }
        if !self.replicas.list.is_empty() {
            self.replicas.primary_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.with_conn(async |c| f(c).await).await
    }

    /// `f` on replica `r`: `Ok` with its answer (which may be an error such as not found), or `Err` when the
    /// replica could not answer and the primary should be asked.
    async fn read_on<T>(
        &self,
        r: &Replica,
        pool: &Pool,
        f: &impl AsyncFn(&mut AsyncPgConnection) -> Result<T>,
    ) -> std::result::Result<Result<T>, Error> {
        use parallax_storage_abi::ErrorKind as K;
        let within = Duration::from_millis(self.pg.pool.acquire_timeout_ms.max(1)).min(REPLICA_CHECKOUT);
        let mut conn = match tokio::time::timeout(within, self.conn_on(&r.spec, pool)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                replicas::read_failed(r, &e, e.kind() == K::Unavailable);
                return Err(e);
            }
            Err(_) => {
                return Err(Error::new(
                    K::Timeout,
                    format!("no connection to replica {} within {} ms", r.host, within.as_millis()),
                ))
            }
        };
        let out = conn.run(async |c| f(c).await).await;
        let lost = out.is_err() && conn.lost();
        let out = self.classify(&r.spec, &mut conn, out).await;
        match out {
            // A conflict on a standby is a recovery conflict (SQLSTATE 40001, "canceling statement due to
            // conflict with recovery"; plain reads raise no unique violation): the primary is asked.
            Err(e) if !matches!(e.kind(), K::NotFound | K::InvalidInput | K::Unsupported) => {
                replicas::read_failed(r, &e, lost);
                Err(e)
            }
            answer => Ok(answer),
        }
    }

    /// The error kind of `out` from `conn`'s state (see [`PostgresBackend::with_conn`]).
    async fn classify<T>(
        &self,
        spec: &ConnectSpec,
        conn: &mut bb8::PooledConnection<'_, driven::Manager>,
        out: Result<T>,
    ) -> Result<T> {
        match out {
            // queryTimeout: the connection was closed on purpose; the kind stays `timeout`.
            Err(e) if e.kind() == parallax_storage_abi::ErrorKind::Timeout => Err(e),
            Err(e) if conn.lost() => {
                Err(Error::connection_lost(format!("(PostgreSQL at {}): {}", spec.location, e.0.message)))
            }
            Err(e) if e.kind() == parallax_storage_abi::ErrorKind::Internal => {
                let pending = conn.run(async |c| migrations::pending(c).await).await;
                match pending {
                    Ok(n) if n > 0 => {
                        Err(Error::schema_behind(format!("{} ({n} migrations pending)", e.0.message)))
                    }
                    _ if conn.lost() => Err(Error::connection_lost(format!(
                        "(PostgreSQL at {}): {}",
                        spec.location, e.0.message
                    ))),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    /// A dedicated connection for a migration, within the connection budget (it may close an idle pooled
    /// connection to make room).
    async fn migration_conn(&self) -> Result<AsyncPgConnection> {
        let slot = self.spec.budget.for_new(Some(&self.pool)).await?;
        connect::connect(&self.spec, slot).await
    }

    /// Migration status read through a pooled connection (health and metrics ask often; no new connection).
    async fn pooled_migration_status(&self) -> Result<Vec<parallax_storage_abi::MigrationInfo>> {
        self.with_conn(async |c| migrations::status(c).await).await
    }

    fn stop_maintenance(&self) {
        for task in [&self.maintenance, &self.health] {
            if let Some(task) = task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
        }
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.stop_maintenance();
    }
}

/// The longest a read waits for a replica's connection before it goes to the primary.
const REPLICA_CHECKOUT: Duration = Duration::from_secs(1);

/// How often the partition task checks that enough months exist ahead.
const KEEP_AHEAD_EVERY: Duration = Duration::from_secs(6 * 3600);

/// See [`PostgresBackend::counts_as_write`].
struct CountsAsWrite<'a>(&'a PostgresBackend);

impl Drop for CountsAsWrite<'_> {
    fn drop(&mut self) {
        self.0.mark_now();
    }
}
