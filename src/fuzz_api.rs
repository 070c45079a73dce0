//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz): each takes untrusted bytes to a parser the plugin
//! runs on input it does not control, and must return (an error is fine) — never panic, hang or exhaust memory.
//! Not part of the plugin's API; `#[doc(hidden)]`.

use abi_stable::std_types::{ROption, RString, RVec};
use parallax_storage_abi::{ExecutionFilter, ExecutionStatus};

/// `storage` config as JSON text (what `check_config` and `open` receive), and the same bytes read as YAML (what
/// a config file holds) then handed over as JSON.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let _ = crate::config::parse(text);
    if let Ok(v) = serde_yaml_ng::from_str::<serde_json::Value>(text) {
        if let Ok(cfg) = crate::config::parse(&v.to_string()) {
            let _ = cfg.effective_json();
            let _ = cfg.warnings();
        }
    }
}

/// A JSON document as it crosses the ABI (input, payload, details, pattern definition).
pub fn document(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let _ = crate::validate::json(text, "input");
    let _ = crate::validate::json_object(text, "pattern definition");
    let mut doc = ROption::RSome(RString::from(text));
    let _ = crate::validate::opt_json(&mut doc, "metadata");
}

/// Page cursors, search queries, ids and IP addresses, and an execution filter built from the bytes (fields
/// split at NUL bytes: pattern name, version, tags…; the first byte picks statuses, including unknown ones).
pub fn cursors_and_filters(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let cursor = ROption::RSome(RString::from(text.as_ref()));
    let _ = crate::validate::time_cursor(&cursor);
    let _ = crate::validate::name_cursor(&cursor);
    let _ = crate::validate::offset_cursor(&cursor);
    let _ = crate::validate::search_terms(&text);
    let _ = crate::validate::uuid(&text, "id");
    let _ = crate::validate::ip_address(&text);
    let _ = crate::validate::semver(&text);
    let mut fields = text.split('\0');
    let name = fields.next().map(RString::from);
    let version = fields.next().map(RString::from);
    let tags: RVec<RString> = fields.map(RString::from).collect();
    let first = bytes.first().copied().unwrap_or(0);
    let statuses: RVec<ExecutionStatus> =
        (0..(first % 4)).map(|i| ExecutionStatus::from_raw(first.wrapping_add(i))).collect();
    let f = ExecutionFilter {
        pattern_name: name.into(),
        pattern_version: version.into(),
        statuses,
        tags,
        ..Default::default()
    };
    let _ = crate::adapter::check_execution_filter(&f);
}

/// A file store record file as the loader reads it from disk, in each of the four encodings and as each kind of
/// record.
pub fn file_record(bytes: &[u8]) {
    crate::file::fuzz_decode(bytes);
}

/// `--older-than`-style ages and RFC 3339 times (CLI arguments and config values).
pub fn durations(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(age) = crate::config::duration::parse_age(text) {
        let _ = crate::config::duration::format_age(age);
    }
    let _ = crate::time::parse_rfc3339(text);
    let _ = crate::config::cron::CronSchedule::parse(text);
}
