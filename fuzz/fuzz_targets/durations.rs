//! Fuzz target `durations`: the plugin's ages and times (`parallax_storage::fuzz_api::durations`) and the CLI's
//! time arguments (`--since`, `--until`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    parallax_storage::fuzz_api::durations(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parallax_storage_host::cli::input::parse_time(text);
    }
});
