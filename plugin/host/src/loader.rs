//! Finding and loading the plugin cdylib, and opening storage from a config.
//!
//! The one entry point is [`Plugin`]: [`Plugin::find`] (`PARALLAX_STORAGE_PLUGIN`, else the library next to the
//! running executable) or [`Plugin::load`] (a path), then [`Plugin::open_config_file`] (a
//! `parallax.config.yaml`), [`Plugin::open_resolved`] (a storage section already read) or [`Plugin::open`] (the
//! `storage` section as JSON). [`crate::open`] does find + read the config + open in one call.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use abi_stable::library::LibraryError;
use parallax_storage_abi::{layouts, PluginModRef, ABI_VERSION};

use crate::{
    client::Storage,
    config::{self, ConfigError, ResolvedConfig},
    convert::{self, ToFfi},
    error::Error,
    logs,
    types::{ConfigReport, LogLevel, OpenOptions, PluginInfo},
};

/// The environment variable naming the plugin library ([`Plugin::find`]).
pub const PLUGIN_ENV: &str = "PARALLAX_STORAGE_PLUGIN";

/// Why the plugin could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// No library at the path given, or none next to the executable.
    Missing,
    /// The library was built against an older ABI major than this host's: rebuild or upgrade the plugin.
    Stale,
    /// The library speaks a newer ABI major, or its layout differs: use a plugin built for this host's major.
    Incompatible,
    /// The file is not a shared library, or not a Parallax storage plugin.
    NotAPlugin,
}

/// Why the plugin could not be found or loaded: one line naming the file and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    kind: LoadErrorKind,
    message: String,
}

impl LoadError {
    fn new(kind: LoadErrorKind, message: String) -> Self {
        LoadError { kind, message }
    }

    /// What went wrong.
    pub fn kind(&self) -> LoadErrorKind {
        self.kind
    }

    /// The one-line explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

/// Why [`crate::open`] or [`Plugin::open_config_file`] failed: the plugin, the config file, or the open itself.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OpenError {
    /// The plugin could not be found or loaded.
    Load(LoadError),
    /// The config file could not be read.
    Config(ConfigError),
    /// The plugin refused the config or could not reach the backend.
    Storage(Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Load(e) => e.fmt(f),
            OpenError::Config(e) => e.fmt(f),
            OpenError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Load(e) => Some(e),
            OpenError::Config(e) => Some(e),
            OpenError::Storage(e) => Some(e),
        }
    }
}

impl From<LoadError> for OpenError {
    fn from(e: LoadError) -> Self {
        OpenError::Load(e)
    }
}

impl From<ConfigError> for OpenError {
    fn from(e: ConfigError) -> Self {
        OpenError::Config(e)
    }
}

impl From<Error> for OpenError {
    fn from(e: Error) -> Self {
        OpenError::Storage(e)
    }
}

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
            Err(LoadError::new(
                LoadErrorKind::Missing,
                format!(
                "plugin {} does not exist; pass --plugin PATH (or PARALLAX_STORAGE_PLUGIN) naming the built {}",
                p.display(),
                library_file_name()
            ),
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| {
        LoadError::new(
            LoadErrorKind::Missing,
            format!("cannot find the running executable: {e}; pass the plugin's path"),
        )
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    // Next to the binary (an install, or target/<profile>/), and one level up (cargo's target/<profile>/deps).
    let candidates = [dir.join(library_file_name()), dir.join("..").join(library_file_name())];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    Err(LoadError::new(
        LoadErrorKind::Missing,
        format!(
        "storage plugin not found; looked in {}; build it with `cargo build --release` or pass --plugin PATH \
         (or set PARALLAX_STORAGE_PLUGIN)",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    ),
    ))
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
        let canonical = path.canonicalize().map_err(|e| {
            LoadError::new(
                LoadErrorKind::Missing,
                format!(
                    "cannot load plugin {}: {e}; pass the path of the built {}",
                    path.display(),
                    library_file_name()
                ),
            )
        })?;
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
        logs::install(plugin.module, LogLevel::Debug.to_ffi());
        Ok(plugin)
    }

    /// Finds and loads the plugin: the library named by `PARALLAX_STORAGE_PLUGIN` when it is set, otherwise
    /// the one next to the running executable (or one directory up, for cargo's `target/<profile>/examples`
    /// and `deps`). The error lists every place looked at and how to fix it.
    pub fn find() -> Result<Plugin, LoadError> {
        let explicit = std::env::var_os(PLUGIN_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
        Plugin::load(&locate(explicit.as_deref())?)
    }

    /// What the plugin build offers: its version, ABI version and backends.
    pub fn info(&self) -> PluginInfo {
        convert::plugin_info((self.module.info())())
    }

    /// Validates a resolved `storage` section (JSON) without connecting.
    pub fn check_config(&self, storage: &serde_json::Value) -> Result<ConfigReport, Error> {
        convert::answer((self.module.check_config())(convert::config_text(storage)))
    }

    /// Opens a storage instance for a `storage` section (JSON, e.g. `{"type": "sqlite", "sqlite": {"path":
    /// "./parallax.db"}}`); runs pending migrations when the config says so. Blocks until the backend is ready.
    pub fn open(&self, storage: &serde_json::Value) -> Result<Storage, Error> {
        self.open_with(storage, OpenOptions::default())
    }

    /// As [`Plugin::open`], with options (e.g. for schema maintenance).
    pub fn open_with(&self, storage: &serde_json::Value, options: OpenOptions) -> Result<Storage, Error> {
        let result = (self.module.open())(convert::config_text(storage), options.to_ffi());
        let inner = result.into_result().map_err(convert::error)?;
        Ok(Storage::new(inner, &self.info().abi_version))
    }

    /// Opens the storage configured in a `parallax.config.yaml` at `path` (its `storage:` section, with `${VAR}`
    /// interpolation and the `PARALLAX_*` environment overrides applied).
    pub fn open_config_file(&self, path: &Path) -> Result<Storage, OpenError> {
        let cfg = config::resolve_from_env(Some(path))?;
        Ok(self.open_resolved(&cfg)?)
    }

    /// Opens the storage of a config already read with [`config::resolve`] or [`config::resolve_from_env`].
    pub fn open_resolved(&self, config: &ResolvedConfig) -> Result<Storage, Error> {
        self.open(&config.storage)
    }
}

/// The one-call entry point: finds and loads the plugin ([`Plugin::find`]), reads the config (`config_file`,
/// else `$PARALLAX_CONFIG`, else `./parallax.config.yaml`, else the defaults: SQLite at `./parallax.db`), and
/// opens it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let storage = parallax_storage_host::open(Some(std::path::Path::new("parallax.config.yaml")))?;
/// println!("{}", storage.health().await?.backend);
/// storage.shutdown().await?;
/// # Ok(()) }
/// ```
pub fn open(config_file: Option<&Path>) -> Result<Storage, OpenError> {
    let plugin = Plugin::find()?;
    let cfg = config::resolve_from_env(config_file)?;
    Ok(plugin.open_resolved(&cfg)?)
}

fn describe(path: &Path, e: LibraryError) -> LoadError {
    let p = path.display();

    let (kind, msg) = match e {
        LibraryError::OpenError { err, .. } => (
            LoadErrorKind::NotAPlugin,
            format!("cannot load plugin {p}: not a loadable shared library ({})", first_line(&err.to_string())),
        ),
        LibraryError::GetSymbolError { .. } => (
            LoadErrorKind::NotAPlugin,
            format!(
                "cannot load plugin {p}: it is a shared library but not a Parallax storage plugin (no root module)"
            ),
        ),
        // abi_stable compares the fixed `<major>.0.0` load versions (ABI_LOAD_VERSION), so only a different
        // major gets here.
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            let theirs = actual_version.major;
            let ours: u32 = abi_major(ABI_VERSION).parse().unwrap_or(0);
            let (kind, what) = if theirs < ours {
                (LoadErrorKind::Stale, "stale")
            } else {
                (LoadErrorKind::Incompatible, "incompatible")
            };
            let msg = format!(
                "plugin {p} is {what}: it was built against storage ABI {actual_version}, this host speaks ABI \
                 {ABI_VERSION} and loads plugins of ABI {}.x only; use a plugin built for ABI {}.x",
                abi_major(ABI_VERSION),
                abi_major(ABI_VERSION)
            );
            (kind, msg)
        }
        LibraryError::AbiInstability(err) => (
            LoadErrorKind::Incompatible,
            format!(
                "plugin {p} is incompatible: its storage ABI layout differs from this host's (ABI {ABI_VERSION}): {}",
                first_line(&err.to_string())
            ),
        ),
        other => (LoadErrorKind::NotAPlugin, format!("cannot load plugin {p}: {}", first_line(&other.to_string()))),
    };
    LoadError::new(kind, msg)
}

fn abi_major(v: &str) -> &str {
    v.split('.').next().unwrap_or(v)
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string()
}
