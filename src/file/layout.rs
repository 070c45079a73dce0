//! Where every record lives under `basePath`, how names are made filesystem-safe, and the file-name
//! timestamps that make directory listings sort by time. See the module documentation of [`super`] for the
//! whole layout.

use std::path::{Path, PathBuf};

use jiff::civil::DateTime;

use super::codec::Encoding;
use crate::time;

pub const MANIFEST_STEM: &str = "manifest";
pub const README: &str = "README.txt";
pub const LOCK: &str = ".lock";
pub const PATTERNS: &str = "patterns";
pub const EXECUTIONS: &str = "executions";
pub const AUDIT: &str = "audit";
/// `retention/runs.json`: the record of cleanup and retention runs (see `README.txt`).
pub const RETENTION: &str = "retention";
pub const RUNS_FILE: &str = "runs.json";
/// `transfers/<id>.json`: the state of each copy or import into this store (see `super::transfer`).
pub const TRANSFERS: &str = "transfers";
/// `audit-chain.json`: the audit chain's head record (format 2; see `README.txt`).
pub const CHAIN_FILE: &str = "audit-chain.json";
pub const EVENTS_SUFFIX: &str = ".events";
/// Temporary files are `.~<final name>.<pid>.<n>.tmp` in the final file's directory.
pub const TEMP_PREFIX: &str = ".~";
pub const TEMP_SUFFIX: &str = ".tmp";
/// Longest escaped name kept whole; longer ones are shortened and end in `~<hash>`.
const MAX_COMPONENT: usize = 200;

/// The store's root directory and the paths of everything in it.
#[derive(Clone, Debug)]
pub struct Layout {
    pub base: PathBuf,
}

impl Layout {
    pub fn new(base: PathBuf) -> Self {
        Layout { base }
    }

    pub fn manifest(&self, enc: Encoding) -> PathBuf {
        self.base.join(format!("{MANIFEST_STEM}.{}", enc.ext()))
    }

    pub fn chain_file(&self) -> PathBuf {
        self.base.join(CHAIN_FILE)
    }

    pub fn pattern_file(&self, name: &str, version: &str, enc: Encoding) -> PathBuf {
        self.base.join(PATTERNS).join(escape(name)).join(format!("{}.{}", escape(version), enc.ext()))
    }

    /// `executions/YYYY/MM/DD/HHMMSS.ffffff_<id>.<ext>`, dated by `started_at` (UTC).
    pub fn execution_file(&self, started_at: i64, id: &str, enc: Encoding) -> PathBuf {
        let t = time::utc(started_at);
        self.base
            .join(EXECUTIONS)
            .join(t.strftime("%Y").to_string())
            .join(t.strftime("%m").to_string())
            .join(t.strftime("%d").to_string())
            .join(format!("{}_{id}.{}", stamp(&t), enc.ext()))
    }

    /// `audit/YYYY-MM-DD/HHMMSS.ffffff_<batch>.<ext>`, dated by the batch's earliest entry.
    pub fn audit_file(&self, earliest: i64, batch: &str, enc: Encoding) -> PathBuf {
        let t = time::utc(earliest);
        self.base.join(AUDIT).join(t.strftime("%Y-%m-%d").to_string()).join(format!(
            "{}_{batch}.{}",
            stamp(&t),
            enc.ext()
        ))
    }
}

/// The events directory beside an execution file: `<stamp>_<id>.events`.
pub fn events_dir(execution_file: &Path) -> Option<PathBuf> {
    let name = execution_file.file_name()?.to_str()?;
    let (stem, _) = Encoding::split(name)?;
    Some(execution_file.with_file_name(format!("{stem}{EVENTS_SUFFIX}")))
}

/// `<seq, six digits>.<ext>` inside an events directory.
pub fn event_file(events_dir: &Path, seq: i64, enc: Encoding) -> PathBuf {
    events_dir.join(format!("{seq:06}.{}", enc.ext()))
}

/// The id in an execution file or events directory name (`<stamp>_<id>`).
pub fn id_of_stem(stem: &str) -> Option<&str> {
    let (_, id) = stem.rsplit_once('_')?;
    uuid::Uuid::parse_str(id).ok().map(|_| id)
}

pub fn is_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// Makes a pattern name or version a safe, reversible file name: ASCII letters, digits, `-`, `_` and `.`
/// (not leading) stay; every other byte becomes `%XX`. So `a/b` → `a%2Fb`, `..` → `%2E.`, `1.0.0+b` →
/// `1.0.0%2Bb`. Escapes longer than 200 bytes are cut and end in `~` and a hash of the whole name (`~` is
/// never produced otherwise); the name inside the file is authoritative.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() <= MAX_COMPONENT {
        return out;
    }
    let mut cut = MAX_COMPONENT - 17;
    // Do not split a `%XX` escape.
    while out.as_bytes()[..cut].iter().rev().take(2).any(|&b| b == b'%') {
        cut -= 1;
    }
    format!("{}~{:016x}", &out[..cut], fnv1a(s.as_bytes()))
}

/// The inverse of [`escape`]; `None` for a shortened (hashed) or malformed name.
pub fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// `HHMMSS.ffffff` (UTC): sorts by time within a day.
fn stamp(t: &DateTime) -> String {
    t.strftime("%H%M%S.%6f").to_string()
}

/// RFC 3339 UTC with microseconds: `2024-01-15T10:30:00.000000Z`.
pub fn format_ts(t: i64) -> String {
    time::rfc3339(t)
}

/// Parses what [`format_ts`] writes; the fraction may have 0 to 6 digits.
pub fn parse_ts(s: &str) -> Option<i64> {
    time::parse_rfc3339(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_reversible_and_safe() {
        for s in ["summarize", "a/b", "..", ".hidden", "x y", "ünï", "1.0.0+build.5", "%41", "a~b", "-"] {
            let e = escape(s);
            assert!(!e.contains('/') && e != "." && e != ".." && !e.starts_with('.'), "{s:?} → {e:?}");
            assert_eq!(unescape(&e).as_deref(), Some(s), "{e}");
        }
        assert_eq!(escape("1.0.0"), "1.0.0");
        let long = "é".repeat(255);
        let e = escape(&long);
        assert!(e.len() <= MAX_COMPONENT && e.contains('~'), "{}", e.len());
        assert_eq!(unescape(&e), None);
        assert_ne!(escape(&long), escape(&"é".repeat(254)));
    }

    #[test]
    fn timestamps_round_trip() {
        for t in
            [0, 1_705_276_800_000_000, 1_705_314_615_123_456, 951_868_799_999_999, 253_402_300_799_999_999]
        {
            assert_eq!(parse_ts(&format_ts(t)), Some(t), "{}", format_ts(t));
        }
        assert_eq!(format_ts(1_705_314_615_123_456), "2024-01-15T10:30:15.123456Z");
        assert_eq!(parse_ts("2024-01-15T10:30:15Z"), Some(1_705_314_615_000_000));
        assert_eq!(parse_ts("2024-01-15T10:30:15.5Z"), Some(1_705_314_615_500_000));
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-01-15 10:30:15Z",
            "2024-01-15T10:30:15",
            "x",
            "2024-01-15T10:30:15.Z",
        ] {
            assert_eq!(parse_ts(bad), None, "{bad}");
        }
        assert_eq!(stamp(&time::utc(1_705_314_615_123_456)), "103015.123456");
        assert_eq!(parse_ts("2024-01-15T10:30:15.1234567Z"), None);
    }

    #[test]
    fn paths_are_dated_in_utc() {
        const JSON: Encoding = Encoding { format: crate::config::FileFormat::Json, gzip: false };
        let layout = Layout::new(PathBuf::from("/s"));
        let id = "0190f3c4-5b6a-7c8d-9e0f-102132435465";
        assert_eq!(
            layout.execution_file(1_705_314_615_123_456, id, JSON),
            PathBuf::from(format!("/s/executions/2024/01/15/103015.123456_{id}.json"))
        );
        assert_eq!(
            layout.audit_file(951_868_799_999_999, "b", JSON),
            PathBuf::from("/s/audit/2000-02-29/235959.999999_b.json")
        );
    }
}
