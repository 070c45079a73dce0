use abi_stable::{std_types::RString, StableAbi};
use std::fmt;

open_enum! {
    /// What went wrong, in a form the host can branch on. Open: a newer plugin may send a kind this host does
    /// not know; treat it like [`ErrorKind::Internal`] (the message still explains it).
    pub struct ErrorKind {
        /// The requested record does not exist.
        NotFound = 0 => "not found",
        /// The write conflicts with existing data (duplicate key, wrong state).
        Conflict = 1 => "conflict",
        /// The caller's input (config, JSON document, filter, argument) is invalid.
        InvalidInput = 2 => "invalid input",
        /// The backend cannot be reached or has been shut down.
        Unavailable = 3 => "unavailable",
        /// The operation did not finish in time.
        Timeout = 4 => "timeout",
        /// The database schema does not match what this plugin expects (pending or unknown migrations).
        Schema = 5 => "schema",
        /// The operation or configuration is not supported by this build or backend (or by the peer's ABI).
        Unsupported = 6 => "unsupported",
        /// A bug or an unexpected backend failure.
        Internal = 7 => "internal",
        /// The plugin panicked while serving the call; the host and the storage object survive.
        Panicked = 8 => "panicked",
    }
}

/// The one error type that crosses the boundary: a kind and a human-readable, secret-free message.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct StorageError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The explanation: human-readable, without secrets.
    pub message: RString,
}

impl StorageError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StorageError { kind, message: RString::from(message.into()) }
    }
    /// The explanation, without the kind.
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
