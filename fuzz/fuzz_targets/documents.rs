//! Fuzz target `documents`: see `parallax_storage::fuzz_api::document`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    parallax_storage::fuzz_api::document(data);
});
