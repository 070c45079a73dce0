//! Embed the Parallax storage plugin: load the cdylib at run time, open a store, call it with plain Rust types.
//!
//! The host links no database driver and not the plugin: everything backend-specific lives in
//! `libparallax_storage.so`, which this crate loads at run time and calls through the stable ABI of
//! `parallax-storage-abi`. This crate's API speaks plain Rust — `String`, `Option`, `Vec`, [`Uuid`] ids,
//! [`Timestamp`]s, [`Json`] documents, Rust enums, and an [`Error`] with a [`kind`](Error::kind) to match on —
//! and converts to and from the FFI types in one private module at the boundary. No `abi_stable` type appears
//! in its public API (`plugin/testing/plain-host` proves it by using the API from a crate that cannot name
//! them).
//!
//! # Load, open, call, shut down
//!
//! ```no_run
//! use parallax_storage_host::{ExecutionCompletion, ExecutionStatus, NewExecution, NewPattern, Plugin};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // 1. Load: PARALLAX_STORAGE_PLUGIN, else the library next to the executable (or Plugin::load(path)).
//! let plugin = Plugin::find()?;
//! // 2. Open: a `storage` section as JSON, a parallax.config.yaml (open_config_file) or a resolved config.
//! let storage = plugin.open(&json!({ "type": "sqlite", "sqlite": { "path": "/tmp/parallax.db" } }))?;
//! // 3. Call: every call is an async fn.
//! storage.put_pattern(NewPattern::new("summarize", "1.0.0", json!({ "steps": [] }))).await?;
//! let run = storage.create_execution(NewExecution::new("summarize", "1.0.0")).await?;
//! storage.complete_execution(run.id, ExecutionCompletion::new(ExecutionStatus::Completed)).await?;
//! // 4. Shut down: waits for queued writes. Always before the process exits.
//! storage.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! [`open`] does steps 1 and 2 in one call from a config file path. Runnable programs:
//! `plugin/host/examples/embed.rs` (tokio) and `plugin/host/examples/embed_without_tokio.rs` (a plain thread),
//! both run by the test suite.
//!
//! # What runs on which thread
//!
//! The plugin brings its own tokio runtime. A call's future may be awaited on **any** executor, or none (a
//! minimal `block_on` on a plain thread works): it is polled on the awaiting thread with the plugin's runtime
//! entered, and the plugin wakes it from its own threads. A call dropped before it finishes still completes in
//! the plugin. [`Plugin::open`] blocks the calling thread until the backend is ready (connections, migrations),
//! so call it outside an async context or in `spawn_blocking` when that matters. Dropping a [`Storage`] without
//! [`Storage::shutdown`] never blocks; queued writes are then committed in the background, and lost if the
//! process exits first.
//!
//! # Errors and panics
//!
//! Every call answers `Result<_, Error>`. [`Error::kind`] is an [`ErrorKind`] (`NotFound`, `Conflict`,
//! `InvalidInput`, `Unavailable`, `Timeout`, `Schema`, `Unsupported`, `Internal`, `Panicked`, or `Unknown(n)`
//! from a newer plugin); the message names the value concerned and, where there is one, the fix. A panic inside
//! the plugin never unwinds into the host: the call answers `Panicked` and the storage object keeps working.
//! Loading fails with a [`LoadError`] whose [`LoadErrorKind`] tells a missing, stale (older ABI major),
//! incompatible (newer major or another layout) library and a file that is not a plugin apart.
//!
//! # ABI versions
//!
//! This host loads any plugin of its ABI major, older or newer minor. A call appended to the ABI after the
//! plugin's minor answers `Unsupported` naming both versions ([`Storage::plugin_abi_version`] says which the
//! plugin has); statuses, event kinds and error kinds a newer plugin adds arrive as `Unknown(n)`. The growth
//! rule itself (appended methods with default bodies, open enums, frozen records, versioned maintenance
//! documents) is documented in the `parallax-storage-abi` crate.
#![warn(missing_docs)]

mod client;
pub mod config;
mod convert;
mod error;
pub mod loader;
pub mod logs;
mod types;

/// The `parallax` binary's implementation; not part of the library API.
#[doc(hidden)]
pub mod cli;

pub use client::{Pages, Storage};
pub use error::{Error, ErrorKind};
pub use loader::{open, LoadError, LoadErrorKind, OpenError, Plugin};
pub use types::*;

/// The documents of the retention maintenance ops (`cleanup`, `retention_status`, `retention_run`): plain
/// serde types shared with the plugin, used by [`Storage::cleanup`], [`Storage::retention_status`] and
/// [`Storage::retention_run`].
pub mod retention {
    pub use parallax_storage_abi::retention::{
        ArchiveRunView, CleanupParams, CleanupReport, CleanupTarget, RetentionRuleView, RetentionRunParams,
        RetentionRunResult, RetentionStatus, RunRecord, TableReport,
    };
}

/// The documents of the archive maintenance ops (`archive`, `archive_verify`, `restore`): plain serde types
/// shared with the plugin, used by [`Storage::archive`], [`Storage::archive_verify`] and [`Storage::restore`].
pub mod archive {
    pub use parallax_storage_abi::archive::{
        ArchiveParams, ArchiveReport, ManifestCheck, ObjectCheck, ObjectEntry, RestoreParams, RestoreReport,
        ResumedRun, VerifyParams, VerifyReport,
    };
}

/// The documents of the transfer maintenance ops (`copy`, `export`, `import`, `backup`): plain serde types
/// shared with the plugin, used by [`Storage::copy`], [`Storage::export`], [`Storage::import`] and
/// [`Storage::backup`]. The module documentation of `parallax_storage_abi::transfer` defines the snapshot cut
/// and the checksum.
pub mod transfer {
    pub use parallax_storage_abi::transfer::{
        BackupParams, BackupReport, Conflict, CopyParams, ExportParams, ExportReport, ImportParams,
        TableTransfer, TransferReport, BACKUP, CHECKSUM_VERSION, COPY, EXPORT, IMPORT, TABLES,
    };
}

/// The document of the `metrics` maintenance op, used by [`Storage::metrics`] and [`Storage::metrics_text`].
pub mod metrics {
    pub use parallax_storage_abi::metrics::{MetricsParams, MetricsText, PROMETHEUS_TEXT_CONTENT_TYPE};
}

/// The document of the `audit-verify` maintenance op, used by [`Storage::audit_verify`]. The module
/// documentation of `parallax_storage_abi::audit` defines the chain (hash, canonical form, kinds of break).
pub mod audit {
    pub use parallax_storage_abi::audit::{
        AuditBreak, AuditVerifyParams, AuditVerifyReport, ChainCheckpoint, ChainHead, AUDIT_VERIFY,
        MAX_BREAKS,
    };
}

/// The document of the `hosts` maintenance op, used by [`Storage::hosts`].
pub mod hosts {
    pub use parallax_storage_abi::hosts::{HostReport, HostsParams, HostsReport, HOSTS};
}
