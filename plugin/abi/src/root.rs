use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_types::VersionStrings,
    std_types::{RResult, RString},
    StableAbi,
};

use crate::{ConfigReport, LogSink, OpenOptions, PluginInfo, StorageBox, StorageError};

/// The ABI version of this crate, reported in [`PluginInfo::abi_version`]: the major says which plugins a host
/// loads at all, the minor which appended calls the peer has (see the crate docs).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version abi_stable checks when a host loads a plugin: `ABI_MAJOR.0.0`, fixed for the whole major.
///
/// abi_stable refuses a library whose minor version is *lower* than the host's, which would make a 2.1 host
/// refuse every 2.0 plugin. So the loader checks only the major here, and the real minor travels in
/// [`ABI_VERSION`] / [`PluginInfo::abi_version`], where the host decides per call.
pub const ABI_LOAD_VERSION: &str = "2.0.0";

/// The plugin's root module, exported by the cdylib.
///
/// **Fields may only be appended**, after `open`, which keeps `#[sabi(last_prefix_field)]` for the whole major;
/// each new field is marked `#[sabi(missing_field(option))]`, so an older plugin still loads in a newer host and
/// the host reads the field as `None` (see the crate docs).
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
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_LOAD_VERSION);
}
