//! The plugin's internal error: a boundary [`StorageError`] plus conversions from the libraries we use.

use parallax_storage_abi::{ErrorKind, StorageError};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub StorageError);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(StorageError::new(kind, message))
    }
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn schema(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Schema, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn panicked(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Panicked, message)
    }

    /// Builds a `Panicked` error from a caught panic payload.
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>, what: &str) -> Self {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        Self::panicked(format!("the plugin panicked in {what}: {detail}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Error {}

impl From<Error> for StorageError {
    fn from(e: Error) -> Self {
        e.0
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Self {
        Error::invalid(format!("config: {e}"))
    }
}

/// What a schema error tells the operator to do.
const SCHEMA_FIX: &str = "the database schema is behind this plugin: run `parallax storage migrate up`";

impl Error {
    /// The connection to the database is gone (closed by the server, network failure): `unavailable`.
    /// `detail` says when and what the driver reported.
    pub fn connection_lost(detail: impl fmt::Display) -> Self {
        Error::unavailable(format!("the database connection was lost {detail}"))
    }

    /// A statement referred to a table, column or function the database does not have.
    pub fn schema_behind(detail: impl fmt::Display) -> Self {
        Error::schema(format!("{detail}; {SCHEMA_FIX}"))
    }

    /// Adds the fix to a `schema` error; other kinds are returned as they are.
    pub fn with_schema_hint(self) -> Self {
        if self.kind() == ErrorKind::Schema && !self.0.message.contains(SCHEMA_FIX) {
            Error::schema_behind(self.0.message.as_str())
        } else {
            self
        }
    }
}

/// The kind a PostgreSQL SQLSTATE decides, for the codes that say more than `internal` (raw tokio-postgres
/// errors: `COPY` and connecting; diesel-async keeps only diesel's
/// [`DatabaseErrorKind`](diesel::result::DatabaseErrorKind), so queries refine their errors where they run:
/// `PostgresBackend::with_conn`).
pub fn pg_sqlstate_kind(code: &tokio_postgres::error::SqlState) -> Option<ErrorKind> {
    use tokio_postgres::error::SqlState as S;
    Some(match code {
        c if *c == S::UNDEFINED_TABLE || *c == S::UNDEFINED_COLUMN || *c == S::UNDEFINED_FUNCTION => {
            ErrorKind::Schema
        }
        c if *c == S::UNIQUE_VIOLATION => ErrorKind::Conflict,
        c if *c == S::QUERY_CANCELED || *c == S::LOCK_NOT_AVAILABLE => ErrorKind::Timeout,
        c if *c == S::ADMIN_SHUTDOWN
            || *c == S::CRASH_SHUTDOWN
            || *c == S::CANNOT_CONNECT_NOW
            || *c == S::TOO_MANY_CONNECTIONS =>
        {
            ErrorKind::Unavailable
        }
        _ => return None,
    })
}

/// The kind of an SQLite failure that diesel reports as `Unknown`, from its result code. SQLite has the code
/// (`sqlite3_extended_errcode`), but diesel drops it: its `DatabaseError` keeps only the `DatabaseErrorKind` it
/// derived (unique, foreign key, check, not-null) and the `sqlite3_errmsg` text. For a busy or locked database
/// that text is exactly SQLite's own text for the code (`sqlite3_errstr`), so comparing with it recovers the
/// code (`SQLITE_LOCKED` may name the table after a colon). A missing table or column is SQLite's parser error
/// (`SQLITE_ERROR`), whose fixed, unlocalised form starts `no such table: ` / `no such column: `.
///
/// Only for errors SQLite raised: [`sqlite_error`] applies it, the SQLite backend calls that.
fn sqlite_result_kind(message: &str) -> Option<ErrorKind> {
    use libsqlite3_sys::{SQLITE_BUSY, SQLITE_LOCKED};
    let errstr = |code| {
        // SAFETY: sqlite3_errstr returns a pointer to a static, NUL-terminated string for any code.
        unsafe { std::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_errstr(code)) }.to_str().unwrap_or("")
    };
    let locked = errstr(SQLITE_LOCKED);
    if message == errstr(SQLITE_BUSY)
        || message == locked
        || message.strip_prefix(locked).is_some_and(|rest| rest.starts_with(": "))
    {
        return Some(ErrorKind::Timeout);
    }
    if message.starts_with("no such table: ") || message.starts_with("no such column: ") {
        return Some(ErrorKind::Schema);
    }
    None
}

/// An error raised by SQLite through diesel: what diesel leaves `Unknown` is refined by SQLite's result code
/// (busy or locked: `timeout`; a missing table or column: `schema`, see `sqlite_result_kind`), everything
/// else as `From<diesel::result::Error>` decides. The SQLite backend converts its diesel errors with this
/// (statements: `.map_err(sqlite_error)`, transactions: [`SqliteFailure`]); no other backend does.
pub fn sqlite_error(e: diesel::result::Error) -> Error {
    use diesel::result::{DatabaseErrorKind as K, Error as D};
    if let D::DatabaseError(K::Unknown, info) = &e {
        match sqlite_result_kind(info.message()) {
            Some(ErrorKind::Schema) => return Error::schema_behind(info.message()),
            Some(kind) => return Error::new(kind, info.message()),
            None => {}
        }
    }
    Error::from(e)
}

/// The error type of an SQLite transaction: diesel's own failures (`BEGIN IMMEDIATE` on a busy database,
/// `COMMIT`) convert with [`sqlite_error`], not with the backend-neutral `From`.
#[derive(Debug)]
pub struct SqliteFailure(pub Error);

impl From<diesel::result::Error> for SqliteFailure {
    fn from(e: diesel::result::Error) -> Self {
        SqliteFailure(sqlite_error(e))
    }
}

impl From<Error> for SqliteFailure {
    fn from(e: Error) -> Self {
        SqliteFailure(e)
    }
}

impl From<SqliteFailure> for Error {
    fn from(e: SqliteFailure) -> Self {
        e.0
    }
}

/// Decided by diesel's [`DatabaseErrorKind`](diesel::result::DatabaseErrorKind), never by the message's words,
/// for every backend. What diesel leaves `Unknown` is `internal` here; SQLite's busy, locked and missing-schema
/// results are refined on the SQLite path only ([`sqlite_error`]), and the PostgreSQL backend refines its own
/// where the statement ran (a lost connection, a schema behind the plugin: `PostgresBackend::with_conn`).
impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        match &e {
            D::NotFound => Error::not_found("record not found"),
            D::DatabaseError(kind, info) => {
                let msg = info.message().to_string();
                match kind {
                    K::UniqueViolation => Error::conflict(msg),
                    K::ForeignKeyViolation
                    | K::CheckViolation
                    | K::NotNullViolation
                    | K::RestrictViolation
                    | K::ExclusionViolation => Error::invalid(msg),
                    K::SerializationFailure => {
                        Error::conflict(format!("{msg} (a concurrent transaction conflicted; retry)"))
                    }
                    K::ClosedConnection => Error::connection_lost(format!("({msg})")),
                    K::ReadOnlyTransaction => Error::unavailable(format!(
                        "{msg}: the database accepts no writes (a read-only server or standby?)"
                    )),
                    _ => Error::internal(msg),
                }
            }
            D::BrokenTransactionManager => {
                Error::unavailable("the database connection broke mid-transaction")
            }
            _ => Error::internal(e.to_string()),
        }
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(e: diesel::ConnectionError) -> Self {
        Error::unavailable(e.to_string())
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Error::new(ErrorKind::Timeout, format!("no database connection available: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::{connection::SimpleConnection, sqlite::SqliteConnection, Connection};

    fn sqlite(path: &std::path::Path) -> SqliteConnection {
        let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        c.batch_execute("PRAGMA busy_timeout = 0;").unwrap();
        c
    }

    #[test]
    fn a_real_sqlite_busy_error_is_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let mut a = sqlite(&path);
        let mut b = sqlite(&path);
        a.batch_execute("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);").unwrap();
        // The backend-neutral conversion does not read SQLite's texts (it also runs on PostgreSQL's errors).
        let neutral = Error::from(b.batch_execute("BEGIN IMMEDIATE;").unwrap_err());
        assert_eq!(neutral.kind(), ErrorKind::Internal, "{neutral}");
        let err = sqlite_error(b.batch_execute("BEGIN IMMEDIATE;").unwrap_err());
        let tx = b.immediate_transaction(|_| -> Result<(), SqliteFailure> { Ok(()) }).unwrap_err();
        assert_eq!(tx.0.kind(), ErrorKind::Timeout, "a transaction's own BEGIN: {}", tx.0);
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        a.batch_execute("COMMIT;").unwrap();
    }

    #[test]
    fn sqlite_missing_schema_is_schema_and_words_decide_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = sqlite(&dir.path().join("s.db"));
        let err = sqlite_error(c.batch_execute("SELECT * FROM patterns;").unwrap_err());
        assert_eq!(err.kind(), ErrorKind::Schema, "{err}");
        assert!(err.to_string().contains("migrate up"), "{err}");
        // Messages that merely contain "busy", "locked" or "connection closed" are not those conditions.
        for sql in [
            "SELECT busy();",
            "SELECT \"database is locked\"();",
            "CREATE TABLE x (a CHECK (a <> 'connection closed')); INSERT INTO x VALUES ('connection closed');",
        ] {
            let err = sqlite_error(c.batch_execute(sql).unwrap_err());
            assert!(
                matches!(err.kind(), ErrorKind::Internal | ErrorKind::InvalidInput),
                "{sql}: {err} ({:?})",
                err.kind()
            );
        }
    }

    #[test]
    fn sqlite_result_codes_come_from_sqlites_own_texts() {
        assert_eq!(sqlite_result_kind("database is locked"), Some(ErrorKind::Timeout));
        assert_eq!(sqlite_result_kind("database table is locked"), Some(ErrorKind::Timeout));
        assert_eq!(sqlite_result_kind("database table is locked: patterns"), Some(ErrorKind::Timeout));
        assert_eq!(sqlite_result_kind("no such table: patterns"), Some(ErrorKind::Schema));
        assert_eq!(sqlite_result_kind("the server is busy"), None);
        assert_eq!(sqlite_result_kind("pattern \"database is locked\" not found"), None);
    }

    #[test]
    fn diesel_kinds_decide() {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        let db = |k, m: &str| Error::from(D::DatabaseError(k, Box::new(m.to_string())));
        assert_eq!(db(K::UniqueViolation, "x").kind(), ErrorKind::Conflict);
        assert_eq!(db(K::CheckViolation, "busy").kind(), ErrorKind::InvalidInput);
        assert_eq!(db(K::ClosedConnection, "x").kind(), ErrorKind::Unavailable);
        // diesel-async's "could not talk to the server" is refined where the statement ran, not by its words.
        assert_eq!(db(K::UnableToSendCommand, "connection closed").kind(), ErrorKind::Internal);
        assert_eq!(db(K::Unknown, "relation \"patterns\" does not exist").kind(), ErrorKind::Internal);
        assert_eq!(db(K::Unknown, "server is busy").kind(), ErrorKind::Internal);
    }

    #[test]
    fn postgres_sqlstates_decide() {
        use tokio_postgres::error::SqlState as S;
        assert_eq!(pg_sqlstate_kind(&S::UNDEFINED_TABLE), Some(ErrorKind::Schema));
        assert_eq!(pg_sqlstate_kind(&S::QUERY_CANCELED), Some(ErrorKind::Timeout));
        assert_eq!(pg_sqlstate_kind(&S::ADMIN_SHUTDOWN), Some(ErrorKind::Unavailable));
        assert_eq!(pg_sqlstate_kind(&S::SYNTAX_ERROR), None);
    }
}
