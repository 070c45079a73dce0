//! The PostgreSQL backend: diesel-async connections in a bb8 pool, TLS through rustls, embedded migrations run
//! under an advisory lock, monthly `executions` partitions kept ahead of time, full-text search.

mod connect;
mod copy;
mod driven;
mod migrations;
mod models;
mod partitions;
mod queries;
mod statements;
#[rustfmt::skip]
pub mod schema;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use diesel_async::AsyncPgConnection;
use parallax_storage_abi::OpenOptions;

pub use self::connect::redact_url;
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
}

impl PostgresBackend {
    pub async fn open(cfg: StorageConfig, options: OpenOptions) -> Result<Self> {
        let pg = cfg.postgresql.clone().ok_or_else(|| {
            Error::invalid("config: storage.type is postgresql but storage.postgresql is not set")
        })?;
        let spec = Arc::new(connect::spec(&pg)?);
        // One direct connection first: a clear error if the server is unreachable or refuses us.
        let conn = connect::connect(&spec).await.map_err(|e| {
            Error::unavailable(format!("cannot connect to PostgreSQL at {}: {e}", spec.location))
        })?;
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
        let copy = copy::CopyPool::new(spec.clone());
        let backend = PostgresBackend { cfg, pg, spec, pool, copy, maintenance: Mutex::new(None) };
        if schema_ready {
            let made = partitions::ensure(&backend.pool, backend.pg.partition_months_ahead).await?;
            if made > 0 {
                tracing::info!(created = made, "created executions partitions ahead of time");
            }
            *backend.maintenance.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(partitions::keep_ahead(backend.pool.clone(), backend.pg.partition_months_ahead));
        }
        tracing::info!(location = %backend.spec.location, "PostgreSQL storage opened");
        Ok(backend)
    }

    /// A pooled connection, or `Timeout` (pool exhausted) / `Unavailable` (server unreachable) within the
    /// configured acquireTimeout.
    async fn conn(&self) -> Result<bb8::PooledConnection<'_, driven::Manager>> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(bb8::RunError::User(e)) => Err(Error::unavailable(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                self.spec.location
            ))),
            Err(bb8::RunError::TimedOut) => {
                let state = self.pool.state();
                let ms = self.pg.pool.acquire_timeout_ms;
                if state.connections >= self.pg.pool.max_connections {
                    Err(Error::new(
                        parallax_storage_abi::ErrorKind::Timeout,
                        format!(
                            "no PostgreSQL connection free within {ms} ms: all {} pool connections are busy \
                             (storage.postgresql.pool.maxConnections)",
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
    /// ([`driven::PgConn::run`]).
    async fn with_conn<T>(&self, f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T>) -> Result<T> {
        self.conn().await?.run(f).await
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
