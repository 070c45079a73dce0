//! Fuzz target `file_records`: see `parallax_storage::fuzz_api::file_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    parallax_storage::fuzz_api::file_record(data);
});
