//! The plugin driven through its ABI directly, without the host crate's plain types.
//!
//! The host API cannot express some inputs the plugin must still refuse or normalise: an id that is not a
//! UUID, an upper-case id, JSON text that does not parse, an unknown maintenance envelope. A host written
//! against the ABI alone (another language, an older host) can send them, so the contract bodies that prove
//! the plugin's answer send them here, on an instance of the same backend opened through the ABI, and compare
//! its errors as the host crate's [`Error`]s.

use std::sync::OnceLock;

use abi_stable::std_types::{RResult, RString};
use parallax_storage_abi as abi;
use parallax_storage_host::{Error, ErrorKind};

use super::{fresh_plugin_library, Harness};

/// The plugin's root module, loaded through the ABI crate (the same library file the host crate loads).
pub fn module() -> abi::PluginModRef {
    static MODULE: OnceLock<abi::PluginModRef> = OnceLock::new();
    *MODULE.get_or_init(|| load(&fresh_plugin_library()))
}

/// The root module of the plugin library at `lib`, through the ABI crate.
pub fn load(lib: &std::path::Path) -> abi::PluginModRef {
    let header = abi_stable::library::lib_header_from_path(lib)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", lib.display()));
    abi::layouts::init_root_module(header).unwrap_or_else(|e| panic!("cannot load {}: {e}", lib.display()))
}

/// A call's answer with the error as the host crate's [`Error`] (kinds compared by name).
pub fn plain<T>(r: RResult<T, abi::StorageError>) -> Result<T, Error> {
    r.into_result().map_err(|e| {
        let kind = [
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::InvalidInput,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Schema,
            ErrorKind::Unsupported,
            ErrorKind::Internal,
            ErrorKind::Panicked,
        ]
        .into_iter()
        .find(|k| k.as_str() == e.kind.as_str())
        .unwrap_or(ErrorKind::Unknown(e.kind.raw()));
        Error::new(kind, e.message.as_str())
    })
}

pub fn rs(s: &str) -> RString {
    RString::from(s)
}

/// An instance opened through the ABI on the harness's data, or, for a backend that allows one instance at a
/// time (the file store), on a fresh store with the same settings next to it. Shut it down with
/// [`Raw::finish`].
pub struct Raw {
    pub storage: abi::StorageBox,
    /// Whether it sees the harness's data.
    pub shared: bool,
}

impl Harness {
    pub fn raw(&self) -> Raw {
        let mut config = self.config.clone();
        let shared = self.concurrent_instances;
        if !shared {
            let base = self.dir.path().join(format!("raw-{}", uuid_like()));
            config["file"]["basePath"] = serde_json::json!(base);
        }
        let storage = plain((module().open())(config.to_string().into(), abi::OpenOptions::default()))
            .unwrap_or_else(|e| panic!("open through the ABI: {e}"));
        Raw { storage, shared }
    }
}

/// An instance opened through the ABI on `config` (for the file store: after the plain instance is shut down).
pub fn open(config: &serde_json::Value) -> abi::StorageBox {
    open_with(module(), config)
}

/// An instance of `module` opened through the ABI on `config`.
pub fn open_with(module: abi::PluginModRef, config: &serde_json::Value) -> abi::StorageBox {
    plain((module.open())(config.to_string().into(), abi::OpenOptions::default()))
        .unwrap_or_else(|e| panic!("open through the ABI: {e}"))
}

fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Raw {
    pub async fn finish(self) {
        plain(self.storage.shutdown().await).expect("shutdown of the ABI instance");
    }
}

/// A new execution as the ABI spells it, with text fields the test can spoil.
pub fn new_execution(pattern: &str, version: &str) -> abi::NewExecution {
    abi::NewExecution {
        id: None.into(),
        pattern_name: pattern.into(),
        pattern_version: version.into(),
        status: abi::ExecutionStatus::Running,
        input: Some(rs(r#"{"q":"hello"}"#)).into(),
        metadata: None.into(),
        tags: Default::default(),
        started_at: None.into(),
    }
}

/// A new pattern as the ABI spells it.
pub fn new_pattern(name: &str, version: &str) -> abi::NewPattern {
    abi::NewPattern {
        id: None.into(),
        name: name.into(),
        version: version.into(),
        description: None.into(),
        definition: rs(r#"{"steps":[]}"#),
        created_by: None.into(),
    }
}
