//! The Parallax storage plugin.
//!
//! Built as a `cdylib`, it exports the root module of [`parallax_storage_abi`]; the host loads it at run time
//! and never links it. Built as an `rlib`, the same code can be called in-process (benchmarks compare the two).

// Only what the benchmarks reach is public (`open_storage`, `postgres::lifecycle_sql`,
// `postgres::search_executions_sql`, `sqlite::search::INDEX_QUEUED_SQL`, `sqlite::search::search_executions_sql`);
// everything else is private so that rustc reports dead code.
mod adapter;
#[allow(dead_code)] // until the archive driver (issue 13) uses every part
mod archive;
mod audit_chain;
mod config;
mod contract;
mod error;
mod file;
#[doc(hidden)]
pub mod fuzz_api;
mod literal_limit;
#[cfg(test)]
mod lock_check;
mod logging;
mod maintenance;
mod metrics;
mod migrate;
mod on_caller;
pub mod postgres;
mod private;
mod retention;
mod rules;
#[cfg(test)]
mod schema_check;
mod sql_text;
pub mod sqlite;
mod time;
mod transfer;
mod validate;
mod writer_thread;

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RResult, RString, RVec},
};
use parallax_storage_abi::*;

use crate::{
    adapter::Adapter,
    config::{BackendType, StorageConfig},
    error::{Error, Result},
};

pub const PLUGIN_VERSION: &str = env!("CARGO_PKG_VERSION");

#[export_root_module]
pub fn get_library() -> PluginModRef {
    PluginMod { info, set_log_sink, check_config, open }.leak_into_prefix()
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, StorageError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.0),
        Err(payload) => RResult::RErr(Error::from_panic(payload, what).0),
    }
}

/// Never unwinds: a backend whose description panics is listed as unavailable, with the panic as its note.
pub extern "C" fn info() -> PluginInfo {
    let backend = |name: &str, migrations: fn() -> Vec<String>| match catch_unwind(migrations) {
        Ok(migrations) => BackendInfo {
            name: name.into(),
            available: true,
            note: "".into(),
            migrations: migrations.into_iter().map(RString::from).collect::<RVec<_>>(),
        },
        Err(payload) => BackendInfo {
            name: name.into(),
            available: false,
            note: Error::from_panic(payload, "info").0.message,
            migrations: RVec::new(),
        },
    };
    PluginInfo {
        plugin_version: PLUGIN_VERSION.into(),
        abi_version: ABI_VERSION.into(),
        backends: vec![
            backend("sqlite", sqlite::migrations::embedded_versions),
            backend("postgresql", postgres::embedded_versions),
            backend("file", file::migrations::format_versions),
        ]
        .into(),
    }
}

/// Never unwinds: a sink that cannot be installed leaves the previous one (or none) in place.
pub extern "C" fn set_log_sink(sink: LogSink) {
    let _ = catch_unwind(AssertUnwindSafe(|| logging::set_sink(sink)));
}

pub extern "C" fn check_config(config_json: RString) -> RResult<ConfigReport, StorageError> {
    guarded("check_config", || {
        let cfg = config::parse(&config_json)?;
        Ok(report(&cfg))
    })
}

fn report(cfg: &StorageConfig) -> ConfigReport {
    ConfigReport {
        backend: backend_name(cfg.backend).into(),
        effective_json: cfg.effective_json().to_string().into(),
        warnings: cfg.warnings().into_iter().map(RString::from).collect(),
    }
}

fn backend_name(b: BackendType) -> &'static str {
    match b {
        BackendType::Postgresql => "postgresql",
        BackendType::Sqlite => "sqlite",
        BackendType::File => "file",
    }
}

pub extern "C" fn open(config_json: RString, options: OpenOptions) -> RResult<StorageBox, StorageError> {
    guarded("open", || open_storage(&config_json, &options))
}

/// Opens a storage instance in-process: what the exported `open` does, minus the FFI guard.
pub fn open_storage(config_json: &str, options: &OpenOptions) -> Result<StorageBox> {
    let cfg = config::parse(config_json)?;
    for w in cfg.warnings() {
        tracing::warn!(target: "parallax_storage::config", "{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8))
        .thread_name("parallax-storage")
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the plugin runtime: {e}")))?;
    match cfg.backend {
        BackendType::Sqlite => {
            let backend = runtime.block_on(sqlite::SqliteBackend::open(cfg.clone(), options.clone()))?;
            Ok(StorageBackend_TO::from_value(Adapter::new(backend, runtime), TD_Opaque))
        }
        BackendType::Postgresql => {
            let backend = runtime.block_on(postgres::PostgresBackend::open(cfg.clone(), options.clone()))?;
            Ok(StorageBackend_TO::from_value(Adapter::new(backend, runtime), TD_Opaque))
        }
        BackendType::File => {
            let backend = runtime.block_on(file::FileBackend::open(cfg.clone(), options.clone()))?;
            Ok(StorageBackend_TO::from_value(Adapter::new(backend, runtime), TD_Opaque))
        }
    }
}
