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
mod connect;
mod copy;
mod driven;
mod metrics;
mod migrations;
mod models;
mod partitions;
mod queries;
mod retention;
mod statements;
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

use self::connect::{ConnectSpec, Pool};
pub use self::statements::lifecycle_sql;
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
}

impl PostgresBackend {
    pub async fn open(cfg: StorageConfig, options: OpenOptions) -> Result<Self> {
        let pg = cfg.postgresql.clone().ok_or_else(|| {
            Error::invalid("config: storage.type is postgresql but storage.postgresql is not set")
        })?;
        let metrics = Arc::new(crate::metrics::Metrics::new(&cfg.metrics, "postgresql"));
        let spec = Arc::new(connect::spec(&pg, metrics.clone())?);
        // One direct connection first: a clear error if the server is unreachable or refuses us. It takes a
        // slot of the budget like every other connection (nothing else is open yet).
        let slot = spec.budget.for_new(None).await?;
        let conn = connect::connect(&spec, slot).await?;
        let schema_ready = if options.maintenance {
            false
        } else {
            let auto_run = cfg.migrations.enabled && cfg.migrations.auto_run;
            migrations::with_wrapper(conn, move |w| {
                crate::migrate::check(w, &migrations::MIGRATIONS, auto_run)
            })
            .await?;
            true
        };
        let pool = connect::pool(spec.clone(), &pg);
        let copy = copy::CopyPool::new(spec.clone(), pool.clone());
        let backend = PostgresBackend { cfg, pg, spec, pool, copy, maintenance: Mutex::new(None), metrics };
        if schema_ready {
            let made =
                partitions::ensure(&backend.pool, &backend.spec, backend.pg.partition_months_ahead).await?;
            if made > 0 {
                tracing::info!(created = made, "created executions partitions ahead of time");
            }
            *backend.maintenance.lock().unwrap_or_else(|p| p.into_inner()) = Some(partitions::keep_ahead(
                backend.pool.clone(),
                backend.spec.clone(),
                backend.pg.partition_months_ahead,
            ));
        }
        tracing::info!(location = %backend.spec.location, "PostgreSQL storage opened");
        Ok(backend)
    }

    /// A pooled connection, or `Timeout` (pool exhausted) / `Unavailable` (server unreachable) within the
    /// configured acquireTimeout. Counted as a waiting request while it waits, and as an acquire timeout when it
    /// gives up ([`budget::Budget::pooled`]).
    async fn conn(&self) -> Result<bb8::PooledConnection<'_, driven::Manager>> {
        match self.spec.budget.pooled(&self.pool).await {
            Ok(c) => Ok(c),
            Err(bb8::RunError::User(e)) => Err(self.spec.cannot_connect(e)),
            Err(bb8::RunError::TimedOut) => {
                let state = self.pool.state();
                let ms = self.pg.pool.acquire_timeout_ms;
                if state.connections >= self.pg.pool.max_connections || self.spec.budget.exhausted() {
                    Err(Error::new(
                        parallax_storage_abi::ErrorKind::Timeout,
                        format!(
                            "no PostgreSQL connection free within {ms} ms: all {} connections are busy ({} \
                             pooled, the rest audit COPY or migrations; storage.postgresql.pool.maxConnections)",
                            self.spec.budget.max(),
                            state.connections
                        ),
                    ))
                } else {
                    Err(Error::unavailable(format!(
                        "PostgreSQL at {} did not accept a connection within {ms} ms (server down or \
                         unreachable?)",
                        self.spec.location
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
        match conn.run(f).await {
            Err(e) if conn.lost() => Err(Error::connection_lost(format!(
                "(PostgreSQL at {}): {}",
                self.spec.location, e.0.message
            ))),
            Err(e) if e.kind() == parallax_storage_abi::ErrorKind::Internal => {
                let pending = conn.run(async |c| migrations::pending(c).await).await;
                match pending {
                    Ok(n) if n > 0 => {
                        Err(Error::schema_behind(format!("{} ({n} migrations pending)", e.0.message)))
                    }
                    _ if conn.lost() => Err(Error::connection_lost(format!(
                        "(PostgreSQL at {}): {}",
                        self.spec.location, e.0.message
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
        if let Some(task) = self.maintenance.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.stop_maintenance();
    }
}

/// How often the partition task checks that enough months exist ahead.
const KEEP_AHEAD_EVERY: Duration = Duration::from_secs(6 * 3600);
