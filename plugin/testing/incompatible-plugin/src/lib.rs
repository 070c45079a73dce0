//! Test fixture: a cdylib exporting a `parallax_storage` root module that claims storage ABI 3.0.0 and has a
//! different layout. A host built for ABI 2.x must refuse it at load with a one-line error naming both versions.

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
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("3.0.0");
}

extern "C" fn describe() -> RString {
    RString::from("a plugin from the future")
}

#[export_root_module]
pub fn get_library() -> FutureModRef {
    FutureMod { describe }.leak_into_prefix()
}
