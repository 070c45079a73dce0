//! The host's error type: what a storage call, a load or an open answers when it fails.

use std::fmt;

/// What went wrong, in a form the caller can `match` on.
///
/// The plugin's error kinds cross the boundary as an open `u8` (a newer plugin may add a kind); a value this
/// host does not know arrives as [`ErrorKind::Unknown`] with its wire number, and should be handled like
/// [`ErrorKind::Internal`] — the message still explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// The database schema does not match what the plugin expects (pending or unknown migrations).
    Schema,
    /// The operation or configuration is not supported by this build or backend (or by the peer's ABI).
    Unsupported,
    /// A bug or an unexpected backend failure.
    Internal,
    /// The plugin panicked while serving the call; the host and the storage object survive.
    Panicked,
    /// A kind added by a newer plugin, with its wire number.
    Unknown(u8),
}

impl ErrorKind {
    /// The kind's name in messages (`not found`, `invalid input`, …); `unknown` for [`ErrorKind::Unknown`].
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
            ErrorKind::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Unknown(n) => write!(f, "unknown ({n})"),
            k => f.write_str(k.as_str()),
        }
    }
}

/// A failed storage call: a [`kind`](Error::kind) to branch on and a human-readable, secret-free message that
/// names the bad value and, where there is one, the fix.
///
/// ```
/// use parallax_storage_host::{Error, ErrorKind};
///
/// let e = Error::new(ErrorKind::NotFound, "execution 0190b3f2-7c1e-7a00-8000-00000000f00d not found");
/// assert_eq!(e.kind(), ErrorKind::NotFound);
/// assert_eq!(e.to_string(), "not found: execution 0190b3f2-7c1e-7a00-8000-00000000f00d not found");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What went wrong (also [`Error::kind`]).
    pub kind: ErrorKind,
    /// The explanation (also [`Error::message`]).
    pub message: String,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The explanation, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for Error {}
