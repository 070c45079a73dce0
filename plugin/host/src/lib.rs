//! Host side of the Parallax storage plugin: finds and loads the plugin cdylib at run time, wraps its FFI
//! storage object in a safe async client, reads `parallax.config.yaml`, and implements the `parallax` CLI.
//!
//! The host links no database driver and not the plugin: everything backend-specific lives in the `.so`.

pub mod cli;
pub mod client;
pub mod config;
pub mod loader;
pub mod logs;

pub use client::Storage;
pub use loader::{LoadError, Plugin};
pub use parallax_storage_abi as abi;
pub use parallax_storage_abi::{ErrorKind, StorageError};
