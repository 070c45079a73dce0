//! Finding and loading the plugin cdylib.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use abi_stable::library::LibraryError;
use parallax_storage_abi::{
    layouts, ConfigReport, LogLevel, OpenOptions, PluginInfo, PluginModRef, StorageError, ABI_VERSION,
};

use crate::{client::Storage, logs};

/// Why the plugin could not be found or loaded. One line, naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// The file name of the plugin library on this platform, e.g. `libparallax_storage.so`.
pub fn library_file_name() -> String {
    format!("{}parallax_storage{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// The plugin to load: `explicit` (from `--plugin` or `PARALLAX_STORAGE_PLUGIN`) if given, otherwise the
/// library next to the running executable. The error lists every place looked at.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, LoadError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(LoadError(format!(
                "plugin {} does not exist; pass --plugin PATH (or PARALLAX_STORAGE_PLUGIN) naming the built {}",
                p.display(),
                library_file_name()
            )))
        };
    }
    let exe =
        std::env::current_exe().map_err(|e| LoadError(format!("cannot find the running executable: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    // Next to the binary (an install, or target/<profile>/), and one level up (cargo's target/<profile>/deps).
    let candidates = [dir.join(library_file_name()), dir.join("..").join(library_file_name())];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    Err(LoadError(format!(
        "storage plugin not found; looked in {}; build it with `cargo build --release` or pass --plugin PATH \
         (or set PARALLAX_STORAGE_PLUGIN)",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )))
}

/// A loaded plugin module. Load once per process, then open as many storage instances as needed.
#[derive(Clone, Copy)]
pub struct Plugin {
    module: PluginModRef,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("plugin_version", &self.info().plugin_version).finish()
    }
}

/// Plugins loaded by this process, by canonical path. Libraries are never unloaded.
static LOADED: Mutex<Vec<(PathBuf, PluginModRef)>> = Mutex::new(Vec::new());

impl Plugin {
    /// Loads the plugin cdylib at `path` and checks its ABI version and layout. Loading the same file again
    /// returns the module already loaded.
    ///
    /// This deliberately avoids `RootModule::load_from_file`, whose per-type process cache would remember the
    /// first library it opened even when that library then failed the checks.
    pub fn load(path: &Path) -> Result<Plugin, LoadError> {
        let canonical = path
            .canonicalize()
            .map_err(|e| LoadError(format!("cannot load plugin {}: {e}", path.display())))?;
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, module)) = loaded.iter().find(|(p, _)| *p == canonical) {
            return Ok(Plugin { module: *module });
        }
        let header = abi_stable::library::lib_header_from_path(&canonical).map_err(|e| describe(path, e))?;
        // A plugin of this ABI major: this minor or newer, or an earlier minor (`abi::layouts` explains why
        // abi_stable's own check alone would refuse those).
        let module = layouts::init_root_module(header).map_err(|e| describe(path, e))?;
        loaded.push((canonical, module));
        let plugin = Plugin { module };
        logs::install(plugin.module, LogLevel::Debug);
        Ok(plugin)
    }

    pub fn info(&self) -> PluginInfo {
        (self.module.info())()
    }

    /// Validates a resolved `storage` config without connecting.
    pub fn check_config(&self, storage: &serde_json::Value) -> Result<ConfigReport, StorageError> {
        (self.module.check_config())(storage.to_string().into()).into_result()
    }

    /// Opens a storage instance; runs pending migrations when the config says so.
    pub fn open(&self, storage: &serde_json::Value) -> Result<Storage, StorageError> {
        self.open_with(storage, OpenOptions::default())
    }

    pub fn open_with(
        &self,
        storage: &serde_json::Value,
        options: OpenOptions,
    ) -> Result<Storage, StorageError> {
        let inner = (self.module.open())(storage.to_string().into(), options).into_result()?;
        Ok(Storage::new(inner, &self.info().abi_version))
    }
}

fn describe(path: &Path, e: LibraryError) -> LoadError {
    let p = path.display();

    let msg = match e {
        LibraryError::OpenError { err, .. } => {
            format!("cannot load plugin {p}: not a loadable shared library ({})", first_line(&err.to_string()))
        }
        LibraryError::GetSymbolError { .. } => format!(
            "cannot load plugin {p}: it is a shared library but not a Parallax storage plugin (no root module)"
        ),
        // abi_stable compares the fixed `<major>.0.0` load versions (ABI_LOAD_VERSION), so only a different
        // major gets here.
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => format!(
            "plugin {p} is incompatible: it was built against storage ABI {actual_version}, this host speaks ABI \
             {ABI_VERSION} and loads plugins of ABI {}.x only; use a plugin built for ABI {}.x",
            abi_major(ABI_VERSION),
            abi_major(ABI_VERSION)
        ),
        LibraryError::AbiInstability(err) => format!(
            "plugin {p} is incompatible: its storage ABI layout differs from this host's (ABI {ABI_VERSION}): {}",
            first_line(&err.to_string())
        ),
        other => format!("cannot load plugin {p}: {}", first_line(&other.to_string())),
    };
    LoadError(msg)
}

fn abi_major(v: &str) -> &str {
    v.split('.').next().unwrap_or(v)
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string()
}
