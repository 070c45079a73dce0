//! Input validation shared by every backend: the adapter runs these before a backend sees a request, so a bad
//! JSON document, id, version or filter is refused the same way everywhere and nothing is half-written.

use std::net::IpAddr;

use abi_stable::std_types::{ROption, RString};
use uuid::Uuid;

use crate::error::{Error, Result};

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 1000;
/// The most audit entries one `append_audit` call accepts.
pub const MAX_AUDIT_BATCH: usize = 10_000;
/// The largest JSON document (input, output, error, metadata, event payload, audit details, pattern
/// definition) one call accepts, in bytes of its text: checked before it is parsed, so a huge document is a
/// clear error, never a parse that holds many times its size in memory.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// The most tags one execution may carry (each at most 100 characters).
pub const MAX_TAGS: usize = 100;

/// A validated page request: at most `limit` items after `after`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<C> {
    pub limit: usize,
    pub after: Option<C>,
}

pub fn limit(limit: u32) -> Result<usize> {
    match limit as usize {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        n => Err(Error::invalid(format!("page limit {n} is too large; the maximum is {MAX_PAGE}"))),
    }
}

/// Cursor of time-ordered pages: `<micros>:<uuid>` of the last item of the previous page.
pub fn time_cursor(cursor: &ROption<RString>) -> Result<Option<(i64, String)>> {
    let Some(c) = cursor.as_ref().into_option() else { return Ok(None) };
    let bad = || {
        Error::invalid(format!(
            "invalid page cursor {:?}; pass the next_cursor of the previous page",
            c.as_str()
        ))
    };
    let (ts, id) = c.as_str().split_once(':').ok_or_else(bad)?;
    let ts = ts.parse::<i64>().map_err(|_| bad())?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(Some((ts, id.hyphenated().to_string())))
}

pub fn encode_time_cursor(ts: i64, id: &str) -> RString {
    RString::from(format!("{ts}:{id}"))
}

/// Cursor of name-ordered pages: `n:<name>`.
pub fn name_cursor(cursor: &ROption<RString>) -> Result<Option<String>> {
    let Some(c) = cursor.as_ref().into_option() else { return Ok(None) };
    match c.as_str().strip_prefix("n:") {
        Some(name) => Ok(Some(name.to_string())),
        None => Err(Error::invalid(format!(
            "invalid page cursor {:?}; pass the next_cursor of the previous page",
            c.as_str()
        ))),
    }
}

pub fn encode_name_cursor(name: &str) -> RString {
    RString::from(format!("n:{name}"))
}

/// Cursor of ranked pages (search): `o:<offset>`.
pub fn offset_cursor(cursor: &ROption<RString>) -> Result<Option<usize>> {
    let Some(c) = cursor.as_ref().into_option() else { return Ok(None) };
    match c.as_str().strip_prefix("o:").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => Ok(Some(n)),
        None => Err(Error::invalid(format!(
            "invalid page cursor {:?}; pass the next_cursor of the previous page",
            c.as_str()
        ))),
    }
}

pub fn encode_offset_cursor(offset: usize) -> RString {
    RString::from(format!("o:{offset}"))
}

/// Splits a search query into lower-case words (runs of letters and digits), without duplicates. Every
/// backend matches these words the same way: whole words, case-insensitive, all of them.
pub fn search_terms(query: &str) -> Result<Vec<String>> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let w = word.to_lowercase();
        if w.chars().count() > 100 {
            return Err(Error::invalid(format!("search word {word:?} is longer than 100 characters")));
        }
        if !terms.contains(&w) {
            terms.push(w);
        }
    }
    if terms.is_empty() {
        return Err(Error::invalid(format!("search query {query:?} has no words to search for")));
    }
    if terms.len() > 32 {
        return Err(Error::invalid(format!("search query has {} words; the maximum is 32", terms.len())));
    }
    Ok(terms)
}

/// A client-supplied UUID (normalised to lower-case hyphenated form), or a new UUIDv7.
pub fn id_or_new(id: &ROption<RString>, what: &str) -> Result<String> {
    match id.as_ref().into_option() {
        Some(s) => uuid(s, what),
        None => Ok(Uuid::now_v7().hyphenated().to_string()),
    }
}

pub fn uuid(s: &str, what: &str) -> Result<String> {
    Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| Error::invalid(format!("{what} {s:?} is not a UUID")))
}

/// A non-empty label of at most `max` characters without control characters.
pub fn label(s: &str, what: &str, max: usize) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    let n = s.chars().count();
    if n > max {
        return Err(Error::invalid(format!("{what} is {n} characters long; the maximum is {max}")));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(format!("{what} {s:?} contains control characters")));
    }
    Ok(())
}

pub fn opt_label(s: &ROption<RString>, what: &str, max: usize) -> Result<()> {
    match s.as_ref().into_option() {
        Some(s) => label(s, what, max),
        None => Ok(()),
    }
}

pub fn semver(v: &str) -> Result<semver::Version> {
    label(v, "version", 50)?;
    semver::Version::parse(v).map_err(|e| {
        Error::invalid(format!(
            "version {v:?} is not a semantic version ({e}); use MAJOR.MINOR.PATCH such as 1.0.0"
        ))
    })
}

/// Refuses a document larger than [`MAX_DOCUMENT_BYTES`], before anything parses it.
fn document_size(text: &str, what: &str) -> Result<()> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes; the maximum is {MAX_DOCUMENT_BYTES} bytes (16 MiB) per document: store large \
             payloads elsewhere and keep a reference",
            text.len()
        )));
    }
    Ok(())
}

/// Parses JSON text and returns it in compact canonical form.
pub fn json(text: &str, what: &str) -> Result<String> {
    document_size(text, what)?;
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::invalid(format!("{what} is not valid JSON: {e}")))?;
    Ok(v.to_string())
}

pub fn json_object(text: &str, what: &str) -> Result<String> {
    document_size(text, what)?;
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::invalid(format!("{what} is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::invalid(format!("{what} must be a JSON object, got {}", json_type(&v))));
    }
    Ok(v.to_string())
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Validates an optional JSON document in place, normalising it.
pub fn opt_json(doc: &mut ROption<RString>, what: &str) -> Result<()> {
    if let ROption::RSome(text) = doc {
        *text = RString::from(json(text.as_str(), what)?);
    }
    Ok(())
}

pub fn ip_address(s: &str) -> Result<()> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let bad =
        || Error::invalid(format!("ip_address {s:?} is not an IPv4 or IPv6 address (optionally /prefix)"));
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match p.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(bad()),
        }
    }
    Ok(())
}

pub fn timestamp(ts: i64, what: &str) -> Result<()> {
    // Years 1970..=9999 keep every backend's timestamp type happy.
    const MAX: i64 = 253_402_300_799_999_999;
    if !(0..=MAX).contains(&ts) {
        return Err(Error::invalid(format!(
            "{what} {ts} is out of range; timestamps are microseconds since 1970-01-01 UTC"
        )));
    }
    Ok(())
}

/// A value of an open ABI enum ([`parallax_storage_abi::ExecutionStatus`], `EventKind`) that this plugin does
/// not know (sent by a host of a newer ABI minor) is refused, never stored as `unknown`.
fn known<T: Copy + std::fmt::Display>(value: T, is_known: bool, all: &[T], what: &str) -> Result<()> {
    if is_known {
        return Ok(());
    }
    let names: Vec<String> = all.iter().map(|v| v.to_string()).collect();
    Err(Error::invalid(format!(
        "{what} {value} is not one this plugin knows (storage ABI {}); use one of: {}",
        parallax_storage_abi::ABI_VERSION,
        names.join(", ")
    )))
}

pub fn known_status(s: parallax_storage_abi::ExecutionStatus, what: &str) -> Result<()> {
    known(s, s.is_known(), &parallax_storage_abi::ExecutionStatus::ALL, what)
}

pub fn known_event_kind(k: parallax_storage_abi::EventKind) -> Result<()> {
    known(k, k.is_known(), &parallax_storage_abi::EventKind::ALL, "event kind")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::now_v7().hyphenated().to_string();
        let c = ROption::RSome(encode_time_cursor(42, &id));
        assert_eq!(time_cursor(&c).unwrap(), Some((42, id)));
        assert!(time_cursor(&ROption::RSome("nope".into())).is_err());
        assert!(time_cursor(&ROption::RSome("1:not-a-uuid".into())).is_err());
        assert_eq!(name_cursor(&ROption::RSome(encode_name_cursor("a:b"))).unwrap(), Some("a:b".into()));
        assert_eq!(offset_cursor(&ROption::RSome(encode_offset_cursor(40))).unwrap(), Some(40));
        assert!(offset_cursor(&ROption::RSome("o:-1".into())).is_err());
    }

    #[test]
    fn search_terms_are_words() {
        assert_eq!(search_terms("Timeout, timeout!  Écrit-42").unwrap(), ["timeout", "écrit", "42"]);
        assert!(search_terms(" -- ").is_err());
        let many: Vec<String> = (0..33).map(|i| format!("w{i}")).collect();
        assert!(search_terms(&many.join(" ")).unwrap_err().to_string().contains("maximum is 32"));
    }

    #[test]
    fn json_and_versions() {
        assert_eq!(json_object("{ \"a\" : 1 }", "definition").unwrap(), "{\"a\":1}");
        assert!(json_object("[1]", "definition").unwrap_err().to_string().contains("must be a JSON object"));
        assert!(json("{", "input").is_err());
        assert!(semver("1.0").unwrap_err().to_string().contains("MAJOR.MINOR.PATCH"));
        semver("1.2.3-beta.1").unwrap();
        ip_address("10.0.0.1").unwrap();
        ip_address("::1/128").unwrap();
        assert!(ip_address("10.0.0.1/33").is_err());
        assert!(limit(1001).is_err());
        assert_eq!(limit(0).unwrap(), DEFAULT_PAGE);
    }
}
