//! The stable ABI between the Parallax host and its storage plugin.
//!
//! This crate holds only what crosses the boundary: the root module ([`PluginModRef`]), the storage trait
//! object ([`StorageBackend`]), the error type, the `#[repr(C)]` data types and the [`maintenance`] documents.
//! It depends on nothing but `abi_stable`, `async-ffi` and `serde`/`serde_json`, so the host never pulls in a
//! database driver.
//!
//! Conventions for everything that crosses:
//! - timestamps are `i64` microseconds since the Unix epoch, UTC;
//! - ids are UUID strings (the plugin generates UUIDv7 ids when the caller supplies none);
//! - JSON documents are JSON text, validated by the plugin.
//!
//! **Embedding the plugin? Use `parallax-storage-host`**, which loads the library, checks its ABI and offers
//! every call with plain Rust types (`String`, `Uuid`, a timestamp type, JSON documents, Rust enums, an error
//! with a `kind()`); its examples (`plugin/host/examples/`) run a whole lifecycle. This crate is the boundary
//! itself, for the plugin and for hosts that drive the FFI types directly.
//!
//! # Load, open, call, shut down
//!
//! 1. **Load**: the cdylib exports a [`PluginModRef`] root module. Load it with abi_stable's
//!    `lib_header_from_path`, then [`layouts::init_root_module`], which also accepts plugins of an earlier
//!    minor of this major (see below). Call `set_log_sink` once to receive the plugin's log events.
//! 2. **Open**: `open` takes the resolved `storage` section of `parallax.config.yaml` as JSON text and
//!    [`OpenOptions`]; it blocks until the backend is ready (connections, migrations) and answers a
//!    [`StorageBox`]. `check_config` validates a section without connecting.
//! 3. **Call**: every [`StorageBackend`] method answers a [`StorageFuture`], an FFI-safe future the host awaits
//!    on any executor (or none: a plain thread that parks between polls works). The plugin brings its own tokio
//!    runtime; a call is polled on the awaiting thread with that runtime entered, and the plugin wakes it from
//!    its own threads. A call dropped unfinished still completes inside the plugin.
//! 4. **Shut down**: `shutdown` waits for queued writes, closes pools and stops the instance's runtime; later
//!    calls answer [`ErrorKind::Unavailable`]. Dropping the box without it never blocks, but writes still
//!    queued when the process exits are lost.
//!
//! **Errors and panics.** Every failure is a [`StorageError`]: an [`ErrorKind`] and a secret-free message. A
//! panic inside the plugin, in a call's future or in the synchronous part of a call, is caught at the boundary
//! and answered as [`ErrorKind::Panicked`]; it never unwinds into the host, and the instance keeps working.
//! The log sink must not unwind either.
//!
//! Open enums carry values a peer does not know instead of misreading them:
//!
//! ```
//! use parallax_storage_abi::{ErrorKind, ExecutionStatus};
//!
//! let from_a_newer_peer = ExecutionStatus::from_raw(9);
//! assert!(!from_a_newer_peer.is_known() && !from_a_newer_peer.is_final());
//! assert_eq!(from_a_newer_peer.to_string(), "unknown (9)");
//! assert_eq!(ExecutionStatus::parse("running"), Some(ExecutionStatus::Running));
//! // Matching needs a `_` arm.
//! let retry = match ErrorKind::Timeout {
//!     ErrorKind::Timeout | ErrorKind::Unavailable => true,
//!     _ => false,
//! };
//! assert!(retry);
//! ```
//!
//! # Versions
//!
//! [`ABI_VERSION`] is this crate's version. The **major** decides whether a host loads a plugin at all; the
//! **minor** says which appended calls the peer has. Any 2.x host loads any 2.x plugin, older or newer, and a
//! plugin of another major is refused at load in one line naming both versions.
//!
//! abi_stable assumes the opposite model (the library at least as new as the host), twice, and this crate
//! works around both:
//! - its version check refuses a library whose minor is lower than the host's. The root module is checked
//!   against [`ABI_LOAD_VERSION`] (`<major>.0.0`, fixed for the major) instead, and the real minor travels in
//!   [`PluginInfo::abi_version`];
//! - its layout check refuses a library whose prefix types (root module, storage vtable) have fewer fields
//!   than the host's. The host checks a plugin against its own layout and, failing that, against the frozen
//!   layout of each earlier minor of the major kept in [`layouts`], then uses it through the current types
//!   ([`layouts::init_root_module`], which the host's loader calls).
//!
//! # How the ABI grows within a major
//!
//! 1. **Calls: appended trait methods.** [`StorageBackend`] keeps `#[sabi(last_prefix_field)]` on
//!    `mark_migration_applied`, the last method of 2.0.0, for the whole 2.x major; it is never moved (moving it
//!    changes the prefix and is a new major). Methods after it are optional in abi_stable's vtable: a plugin
//!    built at an older minor has no entry, and calling the method then runs the trait's default body in the
//!    host. So every appended method **must** have a default body, and that body answers `Unsupported`,
//!    naming the method and the version that added it ([`maintenance::missing_method`]); the host's client
//!    checks the plugin's minor first and names both versions. Without a default body the call would panic;
//!    with a body that pretends success it would be a silent default. The same release freezes the previous
//!    minor's trait (and root module) in [`layouts`]. The root module grows the same way: fields after `open`
//!    with `#[sabi(missing_field(option))]`.
//! 2. **Values: open enums.** Every enum that crosses ([`ErrorKind`], [`ExecutionStatus`], [`EventKind`],
//!    [`PingMode`], [`LogLevel`]) is a `#[repr(transparent)]` newtype over `u8` with one associated constant
//!    per value, so a minor version may add a value (append only; numbers are never reused). The receiver
//!    treats a value it does not know safely: the plugin refuses an unknown status, event kind or ping mode
//!    from the host as invalid input or `Unsupported`; the host shows an unknown error kind like `internal`
//!    (the message still explains it) and an unknown status as `unknown`. Code matching these types needs a
//!    `_` arm, which is the point.
//! 3. **Records: frozen per major.** The `#[repr(C)]` structs (`ExecutionFilter`, `Health`, `AuditEntry`, …)
//!    never change within a major: no field is added, removed, reordered or retyped. New data reaches them
//!    through a new appended method (with new structs), or, for the low-frequency operations below, inside a
//!    versioned JSON document. A change to a struct is a new major.
//! 4. **Maintenance operations: one method, versioned documents.** Cleanup and retention runs, archive,
//!    import/export, metrics, verification, and whatever operators need next do **not** each get a trait method
//!    or a struct. They all cross through `StorageBackend::maintenance` (added in 2.1.0), whose request and
//!    response are JSON documents `{"op": …, "version": N, "params": {…}}` → `{"op": …, "version": N,
//!    "result": {…}}` defined in [`maintenance`]. A new operation, or a new version of an operation's
//!    document, is a change to this crate's serde types and to the plugin, not to the binary layout; the
//!    plugin answers an op or document version it does not know with `Unsupported` naming it, and the
//!    `describe` op lists what it supports, so a host can ask before it calls. Hot paths (the data calls)
//!    stay typed methods; the JSON round trip is fine for calls made once a minute, not once a request.
//!
//! Why 2.0.0: ABI 1.x had exhaustive `#[repr(u8)]` enums (no value could ever be added) and had moved
//! `last_prefix_field`. Nothing was deployed yet, so this was the last cheap moment for a major bump; from here
//! on the rules above let a year of features land as minor versions.
//!
//! The compatibility suite (`tests/plugin_boundary.rs`) keeps a frozen copy of ABI 2.0.0 under
//! `plugin/testing/abi-2.0/` and proves both directions: a 2.0.0 plugin in this host, this plugin in a 2.0.0
//! host.
#![warn(missing_docs)]

#[macro_use]
mod open_enum;

pub mod archive;
pub mod audit;
mod error;
pub mod hosts;
pub mod layouts;
mod log;
pub mod maintenance;
pub mod metrics;
pub mod retention;
mod root;
#[allow(non_local_definitions)] // generated by #[sabi_trait]
mod storage;
pub mod transfer;
mod types;

pub use error::{ErrorKind, StorageError};
pub use log::{LogField, LogLevel, LogRecord, LogSink};
pub use root::{PluginMod, PluginModRef, ABI_LOAD_VERSION, ABI_VERSION};
pub use storage::{StorageBackend, StorageBackend_TO, StorageBox, StorageFuture};
pub use types::*;

pub use abi_stable;
pub use async_ffi;
