//! Reading user input: pattern files (YAML or JSON), `JSON|@file` arguments and `--since`/`--until` times.

use std::{io::Read, path::Path};

use jiff::{civil::DateTime, tz::TimeZone, SignedDuration, Span, Timestamp};

use serde_json::{Map, Value as Json};
use serde_yaml_ng::Value as Yaml;

use super::CliError;

/// A pattern file read and split into what `put_pattern` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternDoc {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub definition: Json,
}

/// Flags that override the document's own `name`, `version` and `description`.
#[derive(Debug, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
}

/// Reads `file` (`-` for stdin) as YAML or JSON, chosen by extension or, failing that, by its first character.
pub fn read_pattern_file(file: &Path, flags: Overrides) -> Result<PatternDoc, CliError> {
    let shown = if file == Path::new("-") { "<stdin>".to_string() } else { file.display().to_string() };
    let text = read_source(file).map_err(|e| CliError::usage(format!("cannot read {shown}: {e}")))?;
    let ext = file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let as_json = match ext.as_deref() {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with(['{', '[']),
    };
    let definition = if as_json {
        serde_json::from_str::<Json>(&text)
            .map_err(|e| CliError::usage(format!("{shown}: invalid JSON: {}", one_line(&e.to_string()))))?
    } else {
        yaml_to_json(&text).map_err(|e| CliError::usage(format!("{shown}: {e}")))?
    };
    let Json::Object(top) = &definition else {
        return Err(CliError::usage(format!(
            "{shown}: the pattern definition must be a mapping (an object) at the top level, found {}",
            json_kind(&definition)
        )));
    };
    let field = |key: &str, flag: Option<String>| -> Result<Option<String>, CliError> {
        if flag.is_some() {
            return Ok(flag);
        }
        match top.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(CliError::usage(format!(
                "{shown}: the top-level `{key}` must be a string, found {}; quote it (e.g. {key}: \"1.0.0\") or \
                 pass --{key}",
                json_kind(other)
            ))),
        }
    };
    let missing = |key: &str, upper: &str| {
        CliError::usage(format!(
            "{shown}: no pattern {key}; add a top-level `{key}:` key to the document or pass --{key} {upper}"
        ))
    };
    let name = field("name", flags.name)?.ok_or_else(|| missing("name", "NAME"))?;
    let version = field("version", flags.version)?.ok_or_else(|| missing("version", "VERSION"))?;
    let description = field("description", flags.description)?;
    Ok(PatternDoc { name, version, description, definition })
}

fn read_source(file: &Path) -> std::io::Result<String> {
    if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(file)
    }
}

/// Parses YAML and converts it to JSON, refusing what JSON cannot hold (non-string keys, tags, NaN).
pub fn yaml_to_json(text: &str) -> Result<Json, String> {
    let mut doc: Yaml =
        serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {}", one_line(&e.to_string())))?;
    doc.apply_merge().map_err(|e| format!("invalid YAML merge key (<<): {}", one_line(&e.to_string())))?;
    convert(&doc, "")
}

fn convert(value: &Yaml, path: &str) -> Result<Json, String> {
    let at = |path: &str| if path.is_empty() { "the top level".to_string() } else { path.to_string() };
    Ok(match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                let f = n.as_f64().and_then(serde_json::Number::from_f64);
                Json::Number(f.ok_or_else(|| {
                    format!(
                        "{}: the number {n} cannot be represented in JSON; quote it as a string",
                        at(path)
                    )
                })?)
            }
        }
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(items) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let Yaml::String(key) = k else {
                    return Err(format!(
                        "{}: mapping keys must be strings, found {}; quote the key",
                        at(path),
                        yaml_kind(k)
                    ));
                };
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                out.insert(key.clone(), convert(v, &child)?);
            }
            Json::Object(out)
        }
        Yaml::Tagged(t) => {
            return Err(format!(
                "{}: YAML tags such as {} are not supported; remove the tag",
                at(path),
                t.tag
            ))
        }
    })
}

fn yaml_kind(v: &Yaml) -> String {
    match v {
        Yaml::Null => "null".into(),
        Yaml::Bool(b) => format!("boolean {b}"),
        Yaml::Number(n) => format!("number {n}"),
        Yaml::String(s) => format!("string {s:?}"),
        Yaml::Sequence(_) => "a list".into(),
        Yaml::Mapping(_) => "a mapping".into(),
        Yaml::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

pub fn json_kind(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) => format!("string {s:?}"),
        Json::Array(_) => "a list".into(),
        Json::Object(_) => "a mapping".into(),
    }
}

/// Clap value parser for ids: a UUID, in any case, with or without hyphens.
pub fn parse_id(arg: &str) -> Result<crate::Uuid, String> {
    crate::Uuid::parse_str(arg.trim()).map_err(|e| {
        format!("{arg:?} is not a UUID ({e}); pass an id as `parallax executions list` prints it")
    })
}

/// Clap value parser for `JSON|@FILE` arguments (`@-` reads stdin): returns the document as compact JSON.
pub fn parse_json_arg(arg: &str) -> Result<crate::Json, String> {
    let (text, from) = match arg.strip_prefix('@') {
        Some(path) => {
            let text = read_source(Path::new(path)).map_err(|e| format!("cannot read {path}: {e}"))?;
            (text, Some(path))
        }
        None => (arg.to_string(), None),
    };
    match serde_json::from_str::<Json>(&text) {
        Ok(v) => Ok(crate::Json::from(v)),
        Err(e) => {
            let mut msg = format!("invalid JSON: {}", one_line(&e.to_string()));
            if let Some(path) = from {
                msg = format!("{path}: {msg}");
            } else if !arg.trim_start().starts_with(['{', '[', '"']) {
                msg.push_str("; pass a JSON document (quote strings: '\"text\"') or @FILE");
            }
            Err(msg)
        }
    }
}

/// Clap value parser for `--since`/`--until`: an RFC3339 time (`2024-01-15T10:30:00Z`, any offset; without one,
/// UTC), or an age (`30d`, `12h`, `1d12h`, `2 weeks`, `1mo`) meaning now minus it, counted in UTC calendar days
/// and months. Read with jiff, as the plugin reads its `maxAge`.
pub fn parse_time(arg: &str) -> Result<crate::Timestamp, String> {
    let arg = arg.trim();
    let bad = || {
        format!(
            "expected an RFC3339 time such as 2024-01-15T10:30:00Z or an age such as 30d, 12h or 90m, \
             found {arg:?}"
        )
    };
    if arg.is_empty() {
        return Err(bad());
    }
    let before_1970 = format!("{arg:?} reaches before 1970-01-01T00:00:00Z, where stored times start");
    let t = if arg.starts_with(|c: char| c.is_ascii_digit()) && arg.contains('-') {
        match arg.parse::<Timestamp>() {
            Ok(t) => t,
            Err(e) => {
                let civil: DateTime = arg.parse().map_err(|_| format!("{}: {e}", bad()))?;
                TimeZone::UTC.to_timestamp(civil).map_err(|e| format!("{}: {e}", bad()))?
            }
        }
    } else {
        let age: Span = arg.parse().map_err(|_| bad())?;
        if age.is_negative() {
            return Err(format!("{}: an age counts back from now and cannot be negative", bad()));
        }
        Timestamp::now()
            .to_zoned(TimeZone::UTC)
            .checked_sub(age)
            .map_err(|_| before_1970.clone())?
            .timestamp()
    };
    match t.as_microsecond() {
        micros if micros >= 0 => Ok(crate::Timestamp::from_micros(micros)),
        _ => Err(before_1970),
    }
}

/// Formats microseconds since the epoch as RFC3339 UTC with microseconds, never panicking.
pub fn format_time(micros: i64) -> String {
    // Stored times are 1970..=9999. A civil (UTC) date-time reaches 9999-12-31T23:59:59.999999; jiff's
    // `Timestamp` stops a day short of it.
    const EPOCH: DateTime = jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0);
    match EPOCH.checked_add(SignedDuration::from_micros(micros)) {
        Ok(t) if micros >= 0 => t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        _ => format!("{micros}us since 1970-01-01T00:00:00Z"),
    }
}

pub fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_conversion() {
        assert_eq!(
            yaml_to_json("a: 1\nb: [x, 2.5]\n").unwrap(),
            serde_json::json!({"a": 1, "b": ["x", 2.5]})
        );
        assert!(yaml_to_json("1: x").unwrap_err().contains("mapping keys must be strings"));
        assert!(yaml_to_json("a: !t x").unwrap_err().contains("a: YAML tags"));
        assert!(yaml_to_json("a: [.nan]").unwrap_err().contains("a[0]: the number"));
        assert!(yaml_to_json("a: [unclosed").unwrap_err().starts_with("invalid YAML"));
    }

    #[test]
    fn times_and_json_args() {
        assert_eq!(
            parse_time("2024-01-15T10:30:00Z"),
            Ok(crate::Timestamp::from_micros(1_705_314_600_000_000))
        );
        assert!(parse_time("30d").unwrap() < parse_time("12h").unwrap());
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2024-13-01T00:00:00Z").is_err());
        assert_eq!(
            parse_time("2024-01-15 10:30:00"),
            Ok(crate::Timestamp::from_micros(1_705_314_600_000_000))
        );
        assert_eq!(
            parse_time("2024-01-15T12:30:00+02:00"),
            Ok(crate::Timestamp::from_micros(1_705_314_600_000_000))
        );
        let e = parse_time("1969-12-31T23:59:59Z").unwrap_err();
        assert_eq!(
            e,
            "\"1969-12-31T23:59:59Z\" reaches before 1970-01-01T00:00:00Z, where stored times start"
        );
        let hour = 3_600_000_000;
        let micros = |arg: &str| parse_time(arg).unwrap().as_micros();
        let (day, week) = (parse_time("1d").unwrap(), parse_time("1w").unwrap());
        assert!((micros("24h") - day.as_micros()).abs() < hour, "{day}");
        assert!((micros("7d") - week.as_micros()).abs() < hour, "{week}");
        assert!(parse_time("1mo").unwrap() < parse_time("27d").unwrap());
        assert!(parse_time("1d12h").unwrap() < day);
        let e = parse_time("-1d").unwrap_err();
        assert!(e.contains("cannot be negative"), "{e}");
        let e = parse_time("30").unwrap_err();
        assert!(e.starts_with("expected an RFC3339 time") && e.ends_with("found \"30\""), "{e}");
        assert!(parse_time("60y").unwrap_err().contains("reaches before 1970-01-01"));
        assert_eq!(format_time(1_705_314_600_000_001), "2024-01-15T10:30:00.000001Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_time(253_402_300_799_999_999), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_time(-5), "-5us since 1970-01-01T00:00:00Z");
        assert_eq!(format_time(i64::MAX), format!("{}us since 1970-01-01T00:00:00Z", i64::MAX));
        assert_eq!(
            parse_json_arg(r#"{ "a" : 1 }"#).map(crate::Json::into_string),
            Ok(r#"{"a":1}"#.to_string())
        );
        assert!(parse_json_arg("{nope").unwrap_err().starts_with("invalid JSON"));
        assert!(parse_json_arg("json").unwrap_err().contains("@FILE"));
    }
}
