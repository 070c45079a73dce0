//! Fuzz target `cursors_filters`: see `parallax_storage::fuzz_api::cursors_and_filters`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    parallax_storage::fuzz_api::cursors_and_filters(data);
});
