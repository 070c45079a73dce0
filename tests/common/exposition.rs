//! The metrics exposition in tests (issue 14): a small parser of the Prometheus text format (enough to find a
//! sample by name and labels and read its value) and `promtool`, found the way the README and `.ci/run` say.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: every sample in order, and the `# TYPE` of each metric family.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
    /// The text as the plugin rendered it (shown when an assertion fails).
    pub text: String,
}

impl Exposition {
    /// Parses `text`, panicking with the line on anything that is not the text format.
    #[track_caller]
    pub fn parse(text: &str) -> Exposition {
        let mut out = Exposition { text: text.to_string(), ..Exposition::default() };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) =
                    rest.split_once(' ').unwrap_or_else(|| bad(n, line, "a TYPE without a type"));
                out.types.insert(name.to_string(), kind.trim().to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                out.helps.insert(name.to_string(), help.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.samples.push(sample(n, line));
        }
        out
    }

    /// Every sample named `name` whose labels include all of `labels` (others may be present).
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .collect()
    }

    /// The value of the one sample named `name` with exactly `labels`; `None` when there is none. Panics when
    /// the labels select more than one sample.
    #[track_caller]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> =
            self.find(name, labels).into_iter().filter(|s| s.labels.len() == labels.len()).collect();
        match found.as_slice() {
            [] => None,
            [s] => Some(s.value),
            many => panic!("{} samples of {name} with labels {labels:?}: {many:?}", many.len()),
        }
    }

    /// Like [`Exposition::value`], 0 when absent (a counter or summary not yet touched).
    #[track_caller]
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Like [`Exposition::value`], panicking with the whole text when the sample is missing.
    #[track_caller]
    pub fn expect(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} with labels {labels:?} in:\n{}", self.text))
    }

    /// Whether any sample of the family `name` (or its `_bucket`/`_sum`/`_count` lines) exists.
    pub fn has_family(&self, name: &str) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                || s.name.strip_prefix(name).is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest))
        })
    }
}

#[track_caller]
fn bad(n: usize, line: &str, why: &str) -> ! {
    panic!("line {}: {why}: {line:?}", n + 1)
}

#[track_caller]
fn sample(n: usize, line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad(n, line, "a sample without a value"));
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        bad(n, line, "not a metric name");
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // Skip separators, then either the closing brace or `key="value"`.
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i;
                    break;
                }
                None => bad(n, line, "unclosed label set"),
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                bad(n, line, "a label value must be quoted");
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bad(n, line, "a dangling escape"),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => bad(n, line, "an unterminated label value"),
                }
            }
            if labels.insert(key.trim().to_string(), value).is_some() {
                bad(n, line, "a repeated label");
            }
        }
        rest = &body[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().unwrap_or_else(|| bad(n, line, "a sample without a value"));
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|_| bad(n, line, "a value that is not a number")),
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().unwrap_or_else(|_| bad(n, line, "a timestamp that is not an integer"));
    }
    if fields.next().is_some() {
        bad(n, line, "text after the timestamp");
    }
    Sample { name: name.to_string(), labels, value }
}

/// The command that unpacks promtool where [`promtool`] looks first (run from the workspace root).
pub const PROMTOOL_INSTALL: &str = "apt-get download prometheus && dpkg -x prometheus_*.deb target/prometheus-pkg \
    (Debian's prometheus package, unpacked without starting the service; or set PROMTOOL to a promtool binary)";

/// `promtool`: `$PROMTOOL` if set, else `<workspace>/target/prometheus-pkg/usr/bin/promtool`, else `promtool` on
/// `PATH`. Panics with the install command when there is none (never skipped).
pub fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PROMTOOL={} does not exist; unpack it with: {PROMTOOL_INSTALL}", p.display());
        return p;
    }
    let unpacked = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/prometheus-pkg/usr/bin/promtool");
    if unpacked.is_file() {
        return unpacked;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "promtool is missing ({} does not exist, none on PATH): {PROMTOOL_INSTALL}",
            unpacked.display()
        )
    })
}

/// Runs `promtool check metrics` on `text` (its lint: names, units, HELP/TYPE, counter suffixes) and panics with
/// promtool's findings and the text when it complains.
#[track_caller]
pub fn promtool_check_metrics(text: &str) {
    let tool = promtool();
    let mut child = Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics failed ({}):\n{said}\non this exposition:\n{text}",
        out.status
    );
}

// ------------------------------------------------------------------ helpers of the backends' own metrics tests

pub const ACTIVE: &str = "parallax_storage_pool_connections_active";
pub const IDLE: &str = "parallax_storage_pool_connections_idle";
pub const WAITING: &str = "parallax_storage_pool_waiting_requests";
pub const DISK_FREE: &str = "parallax_storage_disk_free_bytes";
pub const ROWS: &str = "parallax_storage_table_rows";
pub const BYTES: &str = "parallax_storage_table_size_bytes";
pub const TABLES: [&str; 4] = ["patterns", "executions", "execution_events", "audit_logs"];

/// The value of the sample `name{labels}` (`labels` as rendered, such as `table="executions"`; empty for none)
/// in a Prometheus text exposition.
pub fn value_of(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() { name.to_string() } else { format!("{name}{{{labels}}}") };
    text.lines().find_map(|l| l.strip_prefix(key.as_str())?.strip_prefix(' ')?.trim().parse().ok())
}

/// Scrapes until `ok` holds for the exposition (at most 30 s), naming `what` and the last exposition on
/// failure.
pub async fn until(s: &parallax_storage_host::Storage, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = s.metrics_text().await.unwrap_or_else(|e| panic!("metrics: {e}"));
        if ok(&text) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{what}; the last exposition:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The size of the filesystem holding `dir` (`statvfs`: `f_blocks × f_frsize`).
pub fn filesystem_size(dir: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a writable statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    #[allow(clippy::unnecessary_cast)]
    let size = st.f_blocks as u64 * st.f_frsize as u64;
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_special_values() {
        let e = Exposition::parse(
            "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"u\\\\o\\nte\"} 3\n\
             b{quantile=\"0.99\"} NaN\nc +Inf 1700000000000\nd 1e-3\n",
        );
        assert_eq!(e.types.get("a_total").map(String::as_str), Some("counter"));
        assert_eq!(e.value("a_total", &[("x", "1"), ("y", "q\"u\\o\nte")]), Some(3.0));
        assert!(e.value("b", &[("quantile", "0.99")]).unwrap().is_nan());
        assert_eq!(e.value("c", &[]), Some(f64::INFINITY));
        assert_eq!(e.value("d", &[]), Some(0.001));
        assert_eq!(e.value("a_total", &[("x", "1")]), None, "labels must match exactly");
        assert_eq!(e.find("a_total", &[("x", "1")]).len(), 1);
    }
}
