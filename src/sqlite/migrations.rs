//! The embedded SQLite migrations (`migrations/sqlite`, the same files the Diesel CLI runs) and the SQLite side
//! of the shared migration logic in [`crate::migrate`].

use diesel::{
    connection::SimpleConnection,
    migration::MigrationConnection,
    sql_query,
    sql_types::{BigInt, Nullable, Text},
    sqlite::{Sqlite, SqliteConnection},
    QueryableByName, RunQueryDsl,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

use crate::{
    error::{sqlite_error, Error, Result, SqliteFailure},
    migrate::{self, MigrationConn},
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(QueryableByName)]
struct AppliedRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Nullable<Text>)]
    run_on: Option<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl MigrationConn<Sqlite> for SqliteConnection {
    fn applied_rows(&mut self) -> Result<Vec<(String, Option<String>)>> {
        let exists: Count = sql_query(
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '__diesel_schema_migrations'",
        )
        .get_result(self).map_err(sqlite_error)?;
        if exists.n == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<AppliedRow> = sql_query(
            "SELECT version, CAST(run_on AS TEXT) AS run_on FROM __diesel_schema_migrations ORDER BY version",
        )
        .load(self)
        .map_err(sqlite_error)?;
        Ok(rows.into_iter().map(|r| (r.version, r.run_on)).collect())
    }

    fn ensure_table(&mut self) -> Result<()> {
        MigrationConnection::setup(self).map_err(sqlite_error)?;
        Ok(())
    }

    fn record_applied(&mut self, version: &str) -> Result<()> {
        sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES (?)")
            .bind::<Text, _>(version)
            .execute(self)
            .map_err(sqlite_error)?;
        Ok(())
    }

    fn exclusive<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        // The writer keeps temporary data in memory (`temp_store = MEMORY`, see `connection::writer`); a
        // migration may sort a whole table (CREATE INDEX), so it spills to temporary files as usual.
        self.batch_execute("PRAGMA temp_store = DEFAULT;").map_err(sqlite_error)?;
        // BEGIN IMMEDIATE takes SQLite's write lock: another process migrating waits (busy_timeout), then
        // sees the applied versions.
        let result = self.immediate_transaction(|c| f(c).map_err(SqliteFailure)).map_err(Error::from);
        self.batch_execute("PRAGMA temp_store = MEMORY;").map_err(sqlite_error)?;
        result
    }
}

pub fn embedded_versions() -> Vec<String> {
    migrate::embedded_versions::<Sqlite>(&MIGRATIONS)
}

#[cfg(test)]
mod tests {
    use diesel::{sql_query, sql_types::Integer, QueryableByName, RunQueryDsl};

    use super::*;
    use crate::{config::SqliteConfig, sqlite::connection};

    #[derive(QueryableByName)]
    struct TempStore {
        #[diesel(sql_type = Integer)]
        temp_store: i32,
    }

    fn temp_store(conn: &mut SqliteConnection) -> i32 {
        sql_query("PRAGMA temp_store").get_result::<TempStore>(conn).expect("PRAGMA temp_store").temp_store
    }

    /// The writer keeps statement journals in memory (2 = MEMORY), but a migration may sort a whole table and
    /// must spill to files (0 = DEFAULT) as usual; afterwards the writer is back in memory mode.
    #[test]
    fn writer_keeps_temp_data_in_memory_except_during_migrations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SqliteConfig { path: dir.path().join("t.db"), ..SqliteConfig::default() };
        let mut conn = connection::writer(&cfg).expect("writer");
        assert_eq!(temp_store(&mut conn), 2);
        let inside = conn.exclusive(|c| Ok(temp_store(c))).expect("exclusive");
        assert_eq!(inside, 0);
        assert_eq!(temp_store(&mut conn), 2);
    }
}
