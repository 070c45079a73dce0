//! The SQLite backend: Diesel with the generated schema, one group-committing writer, a pool of read-only
//! connections, and the embedded migrations.

mod archive;
mod connection;
mod metrics;
pub mod migrations;
mod models;
mod queries;
mod retention;
#[rustfmt::skip]
pub mod schema;
pub mod search;
mod vacuum;
mod writer;

use diesel::{sql_query, sql_types::Text, QueryableByName, RunQueryDsl};
use parallax_storage_abi::{Health, OpenOptions};

use self::{connection::ReadPool, writer::Writer};
use crate::{
    config::StorageConfig,
    error::{sqlite_error, Error, Result},
    migrate,
};

pub struct SqliteBackend {
    cfg: StorageConfig,
    writer: Writer,
    readers: ReadPool,
    metrics: crate::metrics::Metrics,
}

impl SqliteBackend {
    pub async fn open(cfg: StorageConfig, options: OpenOptions) -> Result<Self> {
        let sqlite = cfg.sqlite.clone();
        let migrations = cfg.migrations.clone();
        let (conn, pool) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut conn = connection::writer(&sqlite)?;
            if !options.maintenance {
                migrate::check(
                    &mut conn,
                    &migrations::MIGRATIONS,
                    migrations.enabled && migrations.auto_run,
                )?;
            }
            // Once per database created before incremental auto-vacuum (or by another program), while small;
            // never in maintenance mode (migrate, info, dry runs), which must not rewrite the file.
            if !options.maintenance {
                vacuum::convert_existing(&mut conn, &sqlite.path);
            }
            Ok((conn, connection::read_pool(&sqlite)?))
        })
        .await
        .map_err(|e| Error::internal(format!("opening SQLite failed: {e}")))??;
        tracing::info!(path = %cfg.sqlite.path.display(), wal = cfg.sqlite.wal_mode, "SQLite storage opened");
        let metrics = crate::metrics::Metrics::new(&cfg.metrics, "sqlite");
        Ok(SqliteBackend { cfg, writer: Writer::start(conn)?, readers: pool, metrics })
    }

    /// Runs `f` on a read-only pooled connection, off the async worker threads.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut diesel::SqliteConnection) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(p) => Error::from_panic(p, "a SQLite read"),
            Err(_) => Error::unavailable("the SQLite read was cancelled"),
        })?
    }
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    v: String,
}

impl SqliteBackend {
    async fn health_impl(&self) -> Result<Health> {
        let location = self.cfg.sqlite.path.display().to_string();
        let warnings = self.cfg.warnings();
        self.read(move |conn| {
            let started = std::time::Instant::now();
            let v: Version =
                sql_query("SELECT sqlite_version() AS v").get_result(conn).map_err(sqlite_error)?;
            let latency_us = started.elapsed().as_micros() as i64;
            let status = migrate::status(conn, &migrations::MIGRATIONS)?;
            Ok(Health {
                backend: "sqlite".into(),
                server_version: format!("SQLite {}", v.v).into(),
                location: location.into(),
                latency_us,
                schema_version: migrate::current_version(&status),
                pending_migrations: migrate::pending(&status).len() as u32,
                warnings: warnings.into_iter().map(Into::into).collect(),
            })
        })
        .await
    }
}
