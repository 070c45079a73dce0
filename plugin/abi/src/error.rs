use abi_stable::{std_types::RString, StableAbi};
use std::fmt;

/// What went wrong, in a form the host can branch on.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The requested record does not exist.
    NotFound,
    /// The write conflicts with existing data (duplicate key, wrong state).
    Conflict,
    /// The caller's input (config, JSON document, filter, argument) is invalid.
    InvalidInput,
    /// The backend cannot be reached or has been shut down.
    Unavailable,
    /// The operation did not finish in time.
    Timeout,
    /// The database schema does not match what this plugin expects (pending or unknown migrations).
    Schema,
    /// The operation or configuration is not supported by this build or backend.
    Unsupported,
    /// A bug or an unexpected backend failure.
    Internal,
    /// The plugin panicked while serving the call; the host and the storage object survive.
    Panicked,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Schema => "schema",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
            ErrorKind::Panicked => "panicked",
        }
    }
}

/// The one error type that crosses the boundary: a kind and a human-readable, secret-free message.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct StorageError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl StorageError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StorageError { kind, message: RString::from(message.into()) }
    }
    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for StorageError {}
