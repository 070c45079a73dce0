//! The SQLite backend: Diesel with the generated schema, one group-committing writer, a pool of read-only
//! connections, and the embedded migrations.

mod archive;
mod backup;
mod chain;
mod connection;
mod metrics;
pub mod migrations;
mod models;
mod queries;
mod retention;
mod transfer;
#[rustfmt::skip]
pub mod schema;
pub mod search;
mod statements;
mod vacuum;
mod writer;

use diesel::{sql_query, sql_types::Text, QueryableByName, RunQueryDsl};
use parallax_storage_abi::{Health, OpenOptions};

use std::sync::Arc;

use self::{
    connection::{ReadGauges, ReadPool},
    writer::Writer,
};
use crate::{
    config::StorageConfig,
    error::{sqlite_error, Error, Result},
    migrate,
};

pub struct SqliteBackend {
    cfg: StorageConfig,
    writer: Writer,
    readers: ReadPool,
    /// The read pool's connections and waiting reads, for the metrics.
    read_gauges: Arc<ReadGauges>,
    /// The filesystem holding the database file.
    disk: crate::file::DiskFree,
    /// The last table stats measured (see [`metrics::StatsCache`]).
    stats: std::sync::Mutex<metrics::StatsCache>,
    metrics: crate::metrics::Metrics,
}

impl SqliteBackend {
    pub async fn open(cfg: StorageConfig, options: OpenOptions) -> Result<Self> {
        let sqlite = cfg.sqlite.clone();
        let migrations = cfg.migrations.clone();
        let read_gauges = Arc::new(ReadGauges::default());
        let gauges = read_gauges.clone();
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
                // The audit entries written before the chain existed, chained once by the first open that may
                // write (a maintenance open writes nothing).
                chain::chain_legacy(&mut conn)?;
            }
            Ok((conn, connection::read_pool(&sqlite, gauges)?))
        })
        .await
        .map_err(|e| Error::internal(format!("opening SQLite failed: {e}")))??;
        tracing::info!(path = %cfg.sqlite.path.display(), wal = cfg.sqlite.wal_mode, "SQLite storage opened");
        crate::private::warn_at_open(&connection::access_warnings(&cfg.sqlite));
        let metrics = crate::metrics::Metrics::new(&cfg.metrics, "sqlite");
        let dir = cfg.sqlite.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(".".as_ref());
        let disk = crate::file::DiskFree::new(dir.to_path_buf());
        let writer = Writer::start(conn, &cfg.sqlite.path)?;
        Ok(SqliteBackend {
            cfg,
            writer,
            readers: pool,
            read_gauges,
            disk,
            stats: Default::default(),
            metrics,
        })
    }

    /// A short read (one row by key, or one page along an index): run at once on the caller's thread when a
    /// pooled connection is free, otherwise as [`Self::read`]. Handing a 10-20 µs query to the blocking pool
    /// costs two thread hand-offs, several times the query on a busy machine (BENCHMARKS.md, issue 20); the
    /// price is that the caller's thread is held for the query, so only reads bounded by a key or a page go
    /// here. Panics unwind into the call's own catch (`on_caller`), as a blocking-pool panic comes back.
    async fn read_short<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut diesel::SqliteConnection) -> Result<T> + Send + 'static,
    {
        self.read_if(true, f).await
    }

    /// [`Self::read_short`] when `short`, else [`Self::read`].
    async fn read_if<T, F>(&self, short: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut diesel::SqliteConnection) -> Result<T> + Send + 'static,
    {
        if short {
            if let Some(mut conn) = self.read_gauges.try_get(&self.readers) {
                return f(&mut conn);
            }
        }
        self.read(f).await
    }

    /// Runs `f` on a read-only pooled connection, off the async worker threads. The wait for a connection is
    /// counted in the metrics (waiting requests; a timeout in `parallax_storage_pool_acquire_timeouts_total`).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut diesel::SqliteConnection) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let gauges = self.read_gauges.clone();
        // The outer error: no connection within the pool's timeout; the inner result: `f`'s.
        let outcome = tokio::task::spawn_blocking(move || {
            let conn = {
                let _waiting = gauges.waiting.enter();
                pool.get()
            };
            conn.map(|mut conn| f(&mut conn))
        })
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(p) => Error::from_panic(p, "a SQLite read"),
            Err(_) => Error::unavailable("the SQLite read was cancelled"),
        })?;
        outcome.map_err(|e| {
            self.metrics.pool_acquire_timed_out();
            Error::from(e)
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
        let mut warnings = self.cfg.warnings();
        warnings.extend(connection::access_warnings(&self.cfg.sqlite));
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
