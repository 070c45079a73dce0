//! Walking the `storage` JSON value by hand: known-key checks with suggestions, and typed getters whose
//! errors name the full key path, the expected type and what was found.

use serde_json::{Map, Value};

use super::{ConfigError, Secret};

/// Valid keys of every mapping in the `storage` section, used both to reject unknown keys and to point a
/// key written at the wrong level to where it belongs.
pub(super) const STORAGE_KEYS: &[&str] =
    &["type", "postgresql", "sqlite", "file", "migrations", "retention", "archive", "metrics"];
pub(super) const POSTGRES_KEYS: &[&str] = &[
    "url",
    "host",
    "port",
    "database",
    "username",
    "password",
    "pool",
    "ssl",
    "primary",
    "replicas",
    "readPreference",
    "maxReplicaLag",
    "partitionMonthsAhead",
    "queryTimeout",
];
pub(super) const POOL_KEYS: &[&str] =
    &["minConnections", "maxConnections", "idleTimeout", "maxIdleTime", "acquireTimeout"];
pub(super) const SSL_KEYS: &[&str] = &["enabled", "mode", "ca"];
pub(super) const HOST_PORT_KEYS: &[&str] = &["host", "port"];
pub(super) const SQLITE_KEYS: &[&str] = &["path", "walMode", "busyTimeout", "synchronous", "readPoolSize"];
pub(super) const FILE_KEYS: &[&str] = &["basePath", "format", "compress"];
pub(super) const MIGRATIONS_KEYS: &[&str] = &["enabled", "autoRun"];
pub(super) const RETENTION_KEYS: &[&str] =
    &["executions", "auditLogs", "cleanupSchedule", "runSchedule", "archiveDestination"];
pub(super) const EXECUTIONS_KEYS: &[&str] = &["enabled", "maxAge", "maxCount"];
pub(super) const AUDIT_LOGS_KEYS: &[&str] = &["enabled", "maxAge"];
pub(super) const ARCHIVE_KEYS: &[&str] = &[
    "endpoint",
    "region",
    "accessKeyId",
    "secretAccessKey",
    "sessionToken",
    "allowHttp",
    "maxObjectSize",
    "partSize",
    "retries",
    "timeout",
];

pub(super) const METRICS_KEYS: &[&str] =
    &["enabled", "latencyBuckets", "quantiles", "summaryWindow", "statsInterval"];

const ALL_SECTIONS: &[(&str, &[&str])] = &[
    ("storage", STORAGE_KEYS),
    ("storage.postgresql", POSTGRES_KEYS),
    ("storage.postgresql.pool", POOL_KEYS),
    ("storage.postgresql.ssl", SSL_KEYS),
    ("storage.postgresql.primary", HOST_PORT_KEYS),
    ("storage.sqlite", SQLITE_KEYS),
    ("storage.file", FILE_KEYS),
    ("storage.migrations", MIGRATIONS_KEYS),
    ("storage.retention", RETENTION_KEYS),
    ("storage.retention.executions", EXECUTIONS_KEYS),
    ("storage.archive", ARCHIVE_KEYS),
    ("storage.metrics", METRICS_KEYS),
];

/// Case-insensitive Levenshtein distance.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate, if it is close enough to be a plausible typo.
pub(super) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let (best, d) = candidates.iter().map(|c| (*c, distance(word, c))).min_by_key(|(_, d)| *d)?;
    let len = word.chars().count().max(best.chars().count());
    let close = d <= 2 || d * 3 <= len;
    (close && d < len).then_some(best)
}

/// How a value that had the wrong type is shown in an error message.
pub(super) fn describe(value: &Value, secret: bool) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(_) if secret => "a number".to_string(),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) if secret => "a string".to_string(),
        Value::String(s) if s.chars().count() > 60 => {
            format!("string {:?}…", s.chars().take(60).collect::<String>())
        }
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

fn unknown_key(path: &str, key: &str, valid: &[&str]) -> ConfigError {
    let list = valid.join(", ");
    let message = if let Some(s) = suggest(key, valid) {
        format!("unknown key; did you mean `{s}`? Valid keys here: {list}")
    } else if let Some((section, _)) = ALL_SECTIONS.iter().find(|(p, keys)| *p != path && keys.contains(&key))
    {
        format!("unknown key here; `{key}` belongs under {section}. Valid keys here: {list}")
    } else {
        format!("unknown key; valid keys here: {list}")
    };
    ConfigError::new(format!("{path}.{key}"), message)
}

/// A mapping whose keys were checked. A missing or `null` mapping reads as empty, so every getter returns
/// its default.
pub(super) struct Section<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Section<'a> {
    pub fn new(path: String, value: Option<&'a Value>, valid: &[&str]) -> Result<Self, ConfigError> {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                let msg = format!(
                    "expected a mapping with keys {}, found {}",
                    valid.join(", "),
                    describe(other, false)
                );
                return Err(ConfigError::new(path, msg));
            }
        };
        if let Some(key) = map.and_then(|m| m.keys().find(|k| !valid.contains(&k.as_str()))) {
            return Err(unknown_key(&path, key, valid));
        }
        Ok(Section { path, map })
    }

    /// Whether the mapping was written at all (even if empty).
    pub fn present(&self) -> bool {
        self.map.is_some()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn key_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// The value under `key`; `null` counts as not set.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key_path(key), message)
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value, secret: bool) -> ConfigError {
        let mut msg = format!("expected {expected}, found {}", describe(found, secret));
        if let Value::String(s) = found {
            let trimmed = s.trim();
            let numeric = !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit());
            if (expected.starts_with("a boolean") && (trimmed == "true" || trimmed == "false"))
                || (expected.contains("integer") && numeric)
            {
                msg.push_str(" (write it without quotes)");
            }
        }
        self.error(key, msg)
    }

    pub fn subsection(&self, key: &str, valid: &[&str]) -> Result<Section<'a>, ConfigError> {
        Section::new(self.key_path(key), self.get(key), valid)
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.opt_bool(key)?.unwrap_or(default))
    }

    /// A boolean, or `None` when not set (so that something else, e.g. an environment variable, decides).
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(key, "a boolean (true or false)", other, false)),
        }
    }

    /// A non-negative integer in `min..=max`; `expected` describes it, e.g. "a non-negative integer
    /// (milliseconds)".
    pub fn int(
        &self,
        key: &str,
        expected: &str,
        range: (u64, u64),
        default: u64,
    ) -> Result<u64, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        let n = value.as_u64().ok_or_else(|| self.wrong_type(key, expected, value, false))?;
        let (min, max) = range;
        if n < min || n > max {
            let msg = if min == 0 {
                format!("must be at most {max}, found {n}")
            } else {
                format!("must be between {min} and {max}, found {n}")
            };
            return Err(self.error(key, msg));
        }
        Ok(n)
    }

    /// A non-empty string. Integers are accepted and kept as their decimal text, because a value that was
    /// a lone `${VAR}` reference arrives re-typed (a numeric password or user name becomes a number).
    fn text(&self, key: &str, secret: bool) -> Result<Option<String>, ConfigError> {
        let text = match self.get(key) {
            None => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(other) => return Err(self.wrong_type(key, "a string", other, secret)),
        };
        if text.trim().is_empty() {
            return Err(self.error(key, "must not be empty (remove the key to use the default)"));
        }
        Ok(Some(text))
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.text(key, false)
    }

    pub fn secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        Ok(self.text(key, true)?.map(Secret::new))
    }

    /// One of a fixed set of words; the error lists them and suggests the closest.
    pub fn choice<T: Copy>(
        &self,
        key: &str,
        what: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let Value::String(s) = value else {
            let expected = format!("one of {}", names.join(", "));
            return Err(self.wrong_type(key, &expected, value, false));
        };
        if let Some((_, v)) = choices.iter().find(|(n, _)| n == s) {
            return Ok(*v);
        }
        let mut msg = format!("unknown {what} {s:?}; expected one of {}", names.join(", "));
        if let Some(best) = suggest(s, &names) {
            msg.push_str(&format!(" (did you mean {best}?)"));
        }
        Err(self.error(key, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_suggestions() {
        assert_eq!(distance("busyTimout", "busyTimeout"), 1);
        assert_eq!(distance("WALMODE", "walMode"), 0);
        assert_eq!(suggest("postgres", &["postgresql", "sqlite", "file"]), Some("postgresql"));
        assert_eq!(suggest("sqlit", &["postgresql", "sqlite", "file"]), Some("sqlite"));
        assert_eq!(suggest("banana", &["postgresql", "sqlite", "file"]), None);
        assert_eq!(suggest("x", &["ca"]), None);
    }

    #[test]
    fn describe_hides_secrets() {
        assert_eq!(describe(&Value::String("hunter2".into()), true), "a string");
        assert_eq!(describe(&Value::String("abc".into()), false), "string \"abc\"");
        assert_eq!(describe(&serde_json::json!(1.5), false), "number 1.5");
    }

    #[test]
    fn misplaced_key_points_to_its_section() {
        let v = serde_json::json!({"pool": {}});
        let err = Section::new("storage".into(), Some(&v), STORAGE_KEYS).err().unwrap();
        assert_eq!(err.path, "storage.pool");
        assert!(err.message.contains("belongs under storage.postgresql"), "{err}");
    }
}
