//! Test fixture: a cdylib exporting a `parallax_storage` root module that claims another storage ABI major and
//! has a different layout. The claimed version is the package's own version, so one source serves two
//! fixtures: `incompatible-plugin` (3.0.0, newer than the host) and `stale-plugin` (1.0.0, older), whose
//! Cargo.toml points here. A host built for ABI 2.x must refuse both at load with a one-line error naming both
//! versions, and tell a stale plugin from a newer one.

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule, prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings, std_types::RString, StableAbi,
};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FutureModRef)))]
#[sabi(missing_field(panic))]
pub struct FutureMod {
    #[sabi(last_prefix_field)]
    pub describe: extern "C" fn() -> RString,
}

impl RootModule for FutureModRef {
    declare_root_module_statics! {FutureModRef}
    const BASE_NAME: &'static str = "parallax_storage";
    const NAME: &'static str = "parallax_storage";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(env!("CARGO_PKG_VERSION"));
}

extern "C" fn describe() -> RString {
    RString::from("a plugin from the future")
}

#[export_root_module]
pub fn get_library() -> FutureModRef {
    FutureMod { describe }.leak_into_prefix()
}
