use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RString},
    StableAbi,
};

use crate::{ConfigReport, LogSink, OpenOptions, PluginInfo, StorageBox, StorageError};

/// The ABI version of this crate. A host refuses a plugin whose ABI major version differs (for 0.x, minor).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The plugin's root module, exported by the cdylib.
///
/// **Fields may only be appended**, after `open`, and each new field must be read through the generated
/// accessor that returns an `Option` so an older plugin still loads in a newer host.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Plugin version, ABI version, backends and the migrations each one embeds.
    pub info: extern "C" fn() -> PluginInfo,
    /// Installs the host's log sink; events from every storage instance go there.
    pub set_log_sink: extern "C" fn(sink: LogSink),
    /// Parses and validates a resolved `storage` config (JSON text) without connecting anywhere.
    pub check_config: extern "C" fn(config_json: RString) -> RResult<ConfigReport, StorageError>,
    /// Opens a storage instance for a resolved `storage` config (JSON text). Runs pending migrations when
    /// `migrations.enabled` and `migrations.autoRun` are set. Blocks until the backend is ready.
    #[sabi(last_prefix_field)]
    pub open: extern "C" fn(config_json: RString, options: OpenOptions) -> RResult<StorageBox, StorageError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "parallax_storage";
    const NAME: &'static str = "parallax_storage";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
