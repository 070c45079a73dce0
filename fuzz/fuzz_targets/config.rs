//! Fuzz target `config`: see `parallax_storage::fuzz_api::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    parallax_storage::fuzz_api::config(data);
});
