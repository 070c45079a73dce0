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

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        match &e {
            D::NotFound => Error::not_found("record not found"),
            D::DatabaseError(kind, info) => {
                let msg = info.message().to_string();
                match kind {
                    K::UniqueViolation => Error::conflict(msg),
                    K::ForeignKeyViolation | K::CheckViolation | K::NotNullViolation => Error::invalid(msg),
                    K::ClosedConnection => Error::unavailable(msg),
                    _ if msg.contains("no such table")
                        || msg.contains("no such column")
                        || (msg.starts_with("relation ") || msg.starts_with("column ")) && msg.ends_with("does not exist") =>
                    {
                        Error::schema(
                            format!("{msg}; the database schema is behind this plugin: run `parallax storage migrate up`"),
                        )
                    }
                    _ if msg.contains("connection closed")
                        || msg.contains("terminating connection")
                        || msg.contains("server closed the connection") =>
                    {
                        Error::unavailable(format!("the database connection was lost: {msg}"))
                    }
                    _ if msg.contains("database is locked") || msg.contains("busy") => {
                        Error::new(ErrorKind::Timeout, msg)
                    }
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
