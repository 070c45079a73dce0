//! The embedded PostgreSQL migrations (`migrations/postgres`, the same files the Diesel CLI runs) and the
//! PostgreSQL side of [`crate::migrate`]: migrations run in one transaction holding an advisory lock, so several
//! hosts starting at once apply each migration exactly once.

use diesel::{
    connection::Connection,
    migration::{Migration, MigrationConnection, MigrationVersion},
    pg::Pg,
    sql_query,
    sql_types::{Bool, Nullable, Text},
    QueryableByName, RunQueryDsl,
};
use diesel_async::{async_connection_wrapper::AsyncConnectionWrapper, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use parallax_storage_abi::MigrationInfo;

use crate::{
    error::{Error, Result},
    migrate::{self, MigrationConn},
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Arbitrary, fixed key of the advisory lock serialising migrations ("plx-migr").
const MIGRATION_LOCK: i64 = 0x706c_782d_6d69_6772;

pub type Wrapper = AsyncConnectionWrapper<AsyncPgConnection>;

#[derive(QueryableByName)]
struct AppliedRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Nullable<Text>)]
    run_on: Option<String>,
}

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = Bool)]
    present: bool,
}

const TABLE_PRESENT: &str = "SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS present";
const APPLIED: &str =
    "SELECT version::text AS version, run_on::text AS run_on FROM __diesel_schema_migrations ORDER BY version";

impl MigrationConn<Pg> for Wrapper {
    fn applied_rows(&mut self) -> Result<Vec<(String, Option<String>)>> {
        let p: Present = sql_query(TABLE_PRESENT).get_result(self)?;
        if !p.present {
            return Ok(Vec::new());
        }
        let rows: Vec<AppliedRow> = sql_query(APPLIED).load(self)?;
        Ok(rows.into_iter().map(|r| (r.version, r.run_on)).collect())
    }

    fn ensure_table(&mut self) -> Result<()> {
        MigrationConnection::setup(self)?;
        Ok(())
    }

    fn record_applied(&mut self, version: &str) -> Result<()> {
        sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ($1)")
            .bind::<Text, _>(version)
            .execute(self)?;
        Ok(())
    }

    fn exclusive<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.transaction(|conn| {
            sql_query(format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")).execute(conn)?;
            f(conn)
        })
    }
}

/// The applied versions, read on a pooled (async) connection.
async fn applied_rows(conn: &mut AsyncPgConnection) -> Result<Vec<(String, Option<String>)>> {
    use diesel_async::RunQueryDsl as Async;
    let p: Present = Async::get_result(sql_query(TABLE_PRESENT), conn).await?;
    if !p.present {
        return Ok(Vec::new());
    }
    let rows: Vec<AppliedRow> = Async::load(sql_query(APPLIED), conn).await?;
    Ok(rows.into_iter().map(|r| (r.version, r.run_on)).collect())
}

/// Migration status on a pooled connection: health and `migration status` open no connection of their own.
pub async fn status(conn: &mut AsyncPgConnection) -> Result<Vec<MigrationInfo>> {
    let rows = applied_rows(conn).await?;
    migrate::status(&mut Applied(rows), &MIGRATIONS)
}

/// How many embedded migrations the database lacks.
pub async fn pending(conn: &mut AsyncPgConnection) -> Result<usize> {
    Ok(migrate::pending(&status(conn).await?).len())
}

/// Applied versions already read: lets [`migrate::status`] compute from them. It only reads; anything that
/// would change the database is refused.
struct Applied(Vec<(String, Option<String>)>);

fn read_only() -> Error {
    Error::internal("migration status is computed from versions already read; it cannot change the database")
}

impl MigrationHarness<Pg> for Applied {
    fn run_migration(
        &mut self,
        _: &dyn Migration<Pg>,
    ) -> diesel::migration::Result<MigrationVersion<'static>> {
        Err(Box::new(read_only()))
    }
    fn revert_migration(
        &mut self,
        _: &dyn Migration<Pg>,
    ) -> diesel::migration::Result<MigrationVersion<'static>> {
        Err(Box::new(read_only()))
    }
    fn applied_migrations(&mut self) -> diesel::migration::Result<Vec<MigrationVersion<'static>>> {
        Ok(self.0.iter().map(|(v, _)| MigrationVersion::from(v.clone())).collect())
    }
}

impl MigrationConn<Pg> for Applied {
    fn applied_rows(&mut self) -> Result<Vec<(String, Option<String>)>> {
        Ok(self.0.clone())
    }
    fn ensure_table(&mut self) -> Result<()> {
        Err(read_only())
    }
    fn record_applied(&mut self, _: &str) -> Result<()> {
        Err(read_only())
    }
    fn exclusive<T>(&mut self, _: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        Err(read_only())
    }
}

/// Runs blocking migration code on a dedicated connection, off the async worker threads.
pub async fn with_wrapper<T, F>(conn: AsyncPgConnection, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Wrapper) -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        // Created here so that it blocks on the plugin runtime's handle from this blocking thread.
        let mut wrapper = Wrapper::from(conn);
        f(&mut wrapper)
    })
    .await
    .map_err(|e| match e.try_into_panic() {
        Ok(p) => Error::from_panic(p, "a PostgreSQL migration"),
        Err(_) => Error::unavailable("the migration task was cancelled"),
    })?
}

pub fn embedded_versions() -> Vec<String> {
    migrate::embedded_versions::<Pg>(&MIGRATIONS)
}
