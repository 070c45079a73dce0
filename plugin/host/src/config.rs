//! Reading `parallax.config.yaml` and producing the `storage` section handed to the plugin as JSON.
//!
//! Steps: find the file (`--config`, then `$PARALLAX_CONFIG`, then `./parallax.config.yaml`, else defaults),
//! parse the YAML, take `storage` (other top-level sections belong to the rest of Parallax and are ignored),
//! interpolate `${VAR}` / `${VAR:-default}` / `$${` in every string scalar, convert to JSON and apply the
//! `PARALLAX_*` environment overrides. Validation of keys and values is the plugin's job.
//!
//! A second config file (the target of `parallax storage copy --to-config FILE`) is read by
//! [`resolve_target`]: the same interpolation, but no `PARALLAX_*` overrides, which describe the storage of
//! this process (the copy's source) and would otherwise point the target at the same database.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use serde_yaml_ng::{Mapping, Value as Yaml};

const DEFAULT_FILE: &str = "parallax.config.yaml";

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The storage section after interpolation and overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConfig {
    /// The `storage` section as JSON, ready for [`crate::Plugin::open`].
    pub storage: Json,
    /// The file read; `None` when there was none and defaults apply.
    pub source: Option<PathBuf>,
}

/// A configuration error. `Display` is one line naming the file (when there is one) and the key path;
/// it never contains the value of an environment variable referenced by the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file concerned, when there is one.
    pub file: Option<PathBuf>,
    /// The key path concerned, e.g. `storage.postgresql.port`, when there is one.
    pub key: Option<String>,
    /// The sentence after the file name (it already mentions the key).
    pub message: String,
}

impl ConfigError {
    fn new(file: Option<&Path>, key: Option<&str>, message: String) -> Self {
        ConfigError { file: file.map(Path::to_path_buf), key: key.map(str::to_string), message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}", file.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Resolves the configuration with the process environment.
pub fn resolve_from_env(explicit: Option<&Path>) -> Result<ResolvedConfig, ConfigError> {
    resolve(explicit, &|name| std::env::var(name).ok())
}

/// Resolves the configuration; `env` looks up environment variables.
pub fn resolve(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedConfig, ConfigError> {
    resolve_in(Path::new(""), explicit, env)
}

/// Resolves a second config file, the target of a copy, with the process environment (see [`resolve_target`]).
pub fn resolve_target_from_env(path: &Path) -> Result<ResolvedConfig, ConfigError> {
    resolve_target(path, &|name| std::env::var(name).ok())
}

/// Resolves a second config file (the target of `parallax storage copy --to-config FILE`): its `storage`
/// section with `${VAR}` interpolation as [`resolve`] does, but WITHOUT the `PARALLAX_*` environment
/// overrides (and without `PARALLAX_CONFIG`): those describe the storage of this process, the copy's source,
/// and applied to the target they would silently point it at the same database. The file must exist.
pub fn resolve_target(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedConfig, ConfigError> {
    if !path.is_file() {
        let msg = format!(
            "config file {} (given with --to-config) does not exist; pass the target's config file, e.g. \
             --to-config prod.yaml",
            path.display()
        );
        return Err(ConfigError::new(None, None, msg));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(Some(path), None, format!("cannot read the file: {e}")))?;
    let storage = Resolver { file: path, env }.storage_from_yaml(&text)?;
    Ok(ResolvedConfig { storage: Json::Object(storage), source: Some(path.to_path_buf()) })
}

/// As [`resolve`], looking for the default file in `dir` (tests use a temporary directory).
fn resolve_in(dir: &Path, explicit: Option<&Path>, env: Env<'_>) -> Result<ResolvedConfig, ConfigError> {
    let from_var = env("PARALLAX_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
    let (source, how) = match (explicit, from_var) {
        (Some(path), _) => (Some(path.to_path_buf()), "given with --config"),
        (None, Some(path)) => (Some(path), "from PARALLAX_CONFIG"),
        (None, None) => (Some(dir.join(DEFAULT_FILE)).filter(|p| p.is_file()), ""),
    };
    let mut storage = Map::new();
    if let Some(path) = &source {
        if !path.is_file() {
            let msg = format!(
                "config file {} ({how}) does not exist; pass --config FILE or create {DEFAULT_FILE}",
                path.display()
            );
            return Err(ConfigError::new(None, None, msg));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(Some(path), None, format!("cannot read the file: {e}")))?;
        storage = Resolver { file: path, env }.storage_from_yaml(&text)?;
    }
    apply_overrides(&mut storage, env)?;
    Ok(ResolvedConfig { storage: Json::Object(storage), source })
}

struct Resolver<'a> {
    file: &'a Path,
    env: Env<'a>,
}

impl Resolver<'_> {
    fn error(&self, key: Option<&str>, message: String) -> ConfigError {
        ConfigError::new(Some(self.file), key, message)
    }

    fn storage_from_yaml(&self, text: &str) -> Result<Map<String, Json>, ConfigError> {
        let mut doc: Yaml = serde_yaml_ng::from_str(text).map_err(|e| {
            let text = e.to_string();
            let at = match e.location() {
                Some(l) if !text.contains(" at line ") => {
                    format!(" at line {}, column {}", l.line(), l.column())
                }
                _ => String::new(),
            };
            self.error(None, format!("invalid YAML: {text}{at}"))
        })?;
        doc.apply_merge().map_err(|e| self.error(None, format!("invalid YAML merge key (<<): {e}")))?;
        let top = match &doc {
            Yaml::Null => return Ok(Map::new()),
            Yaml::Mapping(m) => m,
            other => {
                let msg = format!("the top level must be a mapping (storage: ...), found {}", kind(other));
                return Err(self.error(None, msg));
            }
        };
        match top.get("storage") {
            None | Some(Yaml::Null) => Ok(Map::new()),
            Some(Yaml::Mapping(section)) => self.mapping(section, "storage"),
            Some(other) => {
                let msg = format!("storage must be a mapping, found {}", kind(other));
                Err(self.error(Some("storage"), msg))
            }
        }
    }

    fn mapping(&self, map: &Mapping, path: &str) -> Result<Map<String, Json>, ConfigError> {
        let mut out = Map::new();
        for (k, v) in map {
            let Yaml::String(key) = k else {
                let msg = format!("{path}: mapping keys must be strings, found {}", kind(k));
                return Err(self.error(Some(path), msg));
            };
            out.insert(key.clone(), self.convert(v, &format!("{path}.{key}"))?);
        }
        Ok(out)
    }

    fn convert(&self, value: &Yaml, path: &str) -> Result<Json, ConfigError> {
        Ok(match value {
            Yaml::Null => Json::Null,
            Yaml::Bool(b) => Json::Bool(*b),
            Yaml::Number(n) => {
                match (n.as_i64(), n.as_u64(), n.as_f64().and_then(serde_json::Number::from_f64)) {
                    (Some(i), _, _) => Json::from(i),
                    (None, Some(u), _) => Json::from(u),
                    (None, None, Some(f)) => Json::Number(f),
                    _ => {
                        return Err(
                            self.error(Some(path), format!("{path}: the number {n} cannot be represented"))
                        )
                    }
                }
            }
            Yaml::String(s) => self.interpolate(s, path)?,
            Yaml::Sequence(items) => Json::Array(
                (items.iter().enumerate())
                    .map(|(i, item)| self.convert(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::Mapping(map) => Json::Object(self.mapping(map, path)?),
            Yaml::Tagged(t) => {
                let msg = format!("{path}: YAML tags such as {} are not supported; remove the tag", t.tag);
                return Err(self.error(Some(path), msg));
            }
        })
    }

    /// Substitutes references in one scalar. A scalar that is exactly one reference is re-typed.
    fn interpolate(&self, text: &str, path: &str) -> Result<Json, ConfigError> {
        let mut out = String::new();
        let mut rest = text;
        let mut whole = false;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    let msg = format!(
                        "{path} has an unterminated ${{ (no closing }}); write $${{ for a literal ${{"
                    );
                    return Err(self.error(Some(path), msg));
                };
                out.push_str(&self.lookup(&body[..end], path)?);
                rest = &body[end + 1..];
                // The reference spans the whole scalar: it started at 0 and nothing follows it.
                whole = tail.len() == text.len() && rest.is_empty();
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        Ok(if whole { retype(out) } else { Json::String(out) })
    }

    fn lookup(&self, reference: &str, path: &str) -> Result<String, ConfigError> {
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            let msg = format!(
                "{path} references ${{{reference}}}, which is not a valid variable reference; \
                 write ${{NAME}} or ${{NAME:-default}} (letters, digits, _), or $${{ for a literal ${{"
            );
            return Err(self.error(Some(path), msg));
        }
        if default.is_some_and(|d| d.contains("${")) {
            let msg =
                format!("{path}: nested references in a default (${{{name}:-${{...}}}}) are not supported");
            return Err(self.error(Some(path), msg));
        }
        match ((self.env)(name), default) {
            (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
            (Some(value), _) => Ok(value),
            (None, Some(default)) => Ok(default.to_string()),
            (None, None) => {
                let msg = format!(
                    "{path} references ${{{name}}}, which is not set; export it or write \
                     ${{{name}:-default}}"
                );
                Err(self.error(Some(path), msg))
            }
        }
    }
}

/// Re-types the text of a lone `${VAR}` the way YAML would type a plain scalar (core schema), keeping
/// anything that would not read back identically (`007`, `+5`, `1e3`, `#x`) as a string.
fn retype(text: String) -> Json {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Json::Null,
        "true" | "True" | "TRUE" => return Json::Bool(true),
        "false" | "False" | "FALSE" => return Json::Bool(false),
        _ => {}
    }
    let number = match (text.parse::<i64>(), text.parse::<u64>(), text.parse::<f64>()) {
        (Ok(i), _, _) => Some(Json::from(i)),
        (_, Ok(u), _) => Some(Json::from(u)),
        (_, _, Ok(f)) if text.contains('.') => serde_json::Number::from_f64(f).map(Json::Number),
        _ => None,
    };
    number.filter(|n| n.as_number().is_some_and(|n| n.to_string() == text)).unwrap_or(Json::String(text))
}

fn kind(value: &Yaml) -> String {
    match value {
        Yaml::Null => "null".into(),
        Yaml::Bool(b) => format!("boolean {b}"),
        Yaml::Number(n) => format!("number {n}"),
        Yaml::String(s) => format!("string {s:?}"),
        Yaml::Sequence(_) => "a list".into(),
        Yaml::Mapping(_) => "a mapping".into(),
        Yaml::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// `(variable, key, whether the key is under storage.postgresql rather than storage)`.
const OVERRIDES: &[(&str, &str, bool)] = &[
    ("PARALLAX_STORAGE_TYPE", "type", false),
    ("PARALLAX_DATABASE_URL", "url", true),
    ("PARALLAX_DATABASE_HOST", "host", true),
    ("PARALLAX_DATABASE_PORT", "port", true),
    ("PARALLAX_DATABASE_NAME", "database", true),
    ("PARALLAX_DATABASE_USER", "username", true),
    ("PARALLAX_DATABASE_PASSWORD", "password", true),
];

fn apply_overrides(storage: &mut Map<String, Json>, env: Env<'_>) -> Result<(), ConfigError> {
    for (var, key, in_postgresql) in OVERRIDES {
        let Some(raw) = env(var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let fail = |key: &str, msg: String| ConfigError::new(None, Some(key), format!("{var}: {msg}"));
        let value = match *key {
            "port" => Json::from(raw.trim().parse::<u64>().map_err(|_| {
                fail("storage.postgresql.port", format!("must be an integer port number, found {raw:?}"))
            })?),
            _ => Json::String(raw),
        };
        let target = if *in_postgresql {
            let section = storage.entry("postgresql").or_insert(Json::Null);
            if section.is_null() {
                *section = Json::Object(Map::new());
            }
            let Json::Object(map) = section else {
                let msg = "cannot apply the override because storage.postgresql is not a mapping".to_string();
                return Err(fail("storage.postgresql", msg));
            };
            map
        } else {
            &mut *storage
        };
        target.insert((*key).to_string(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    /// Writes `yaml` as `parallax.config.yaml` in a fresh directory and resolves it from there.
    fn run(yaml: &str, vars: &[(&str, &str)]) -> Result<ResolvedConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DEFAULT_FILE), yaml).unwrap();
        resolve_in(dir.path(), None, &env_of(vars)).map_err(|mut e| {
            e.file = e.file.map(|f| PathBuf::from(f.file_name().unwrap())); // stable names in assertions
            e
        })
    }

    fn storage(yaml: &str, vars: &[(&str, &str)]) -> Json {
        run(yaml, vars).unwrap_or_else(|e| panic!("{e}")).storage
    }

    /// The error text, checked to contain `needle`.
    fn fails(yaml: &str, vars: &[(&str, &str)], needle: &str) -> String {
        let text = run(yaml, vars).expect_err("expected an error").to_string();
        assert!(text.contains(needle), "{text:?} does not contain {needle:?}");
        text
    }

    #[test]
    fn file_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let none = resolve_in(dir.path(), None, &env_of(&[])).unwrap();
        assert_eq!((none.storage, none.source), (json!({}), None));

        let missing = dir.path().join("nope.yaml");
        let err = resolve_in(dir.path(), Some(&missing), &env_of(&[])).unwrap_err().to_string();
        assert!(
            err.contains("nope.yaml") && err.contains("pass --config FILE or create parallax.config.yaml")
        );
        let env = env_of(&[("PARALLAX_CONFIG", missing.to_str().unwrap())]);
        let err = resolve_in(dir.path(), None, &env).unwrap_err().to_string();
        assert!(err.contains("nope.yaml (from PARALLAX_CONFIG) does not exist"), "{err}");

        let other = dir.path().join("other.yaml");
        std::fs::write(&other, "storage: {type: file}").unwrap();
        std::fs::write(dir.path().join(DEFAULT_FILE), "storage: {type: sqlite}").unwrap();
        let env = env_of(&[("PARALLAX_CONFIG", other.to_str().unwrap())]);
        let got = resolve_in(dir.path(), None, &env).unwrap();
        assert_eq!((got.storage, got.source), (json!({"type": "file"}), Some(other.clone())));
        let got = resolve_in(dir.path(), None, &env_of(&[])).unwrap();
        assert_eq!(
            (got.storage, got.source),
            (json!({"type": "sqlite"}), Some(dir.path().join(DEFAULT_FILE)))
        );
        let env = env_of(&[("PARALLAX_CONFIG", "/nonexistent")]);
        assert_eq!(resolve_in(dir.path(), Some(&other), &env).unwrap().source, Some(other));
    }

    #[test]
    fn sections_and_structure() {
        assert_eq!(storage("", &[]), json!({}));
        assert_eq!(storage("server: {port: 8080}\n", &[]), json!({}));
        assert_eq!(storage("storage:\n", &[]), json!({}));
        let other_sections_ignored = storage("other: ${UNSET}\nstorage: {sqlite: {walMode: false}}", &[]);
        assert_eq!(other_sections_ignored, json!({"sqlite": {"walMode": false}}));
        let e = fails("storage: 5", &[], "storage must be a mapping, found number 5");
        assert_eq!(e, "parallax.config.yaml: storage must be a mapping, found number 5");
        fails("- a\n- b\n", &[], "parallax.config.yaml: the top level must be a mapping");
        let e =
            fails("storage:\n  sqlite:\n    path: [unclosed\n", &[], "parallax.config.yaml: invalid YAML: ");
        assert!(e.contains("at line 4 column 1"), "{e}");
        fails("storage:\n  1: x\n", &[], "storage: mapping keys must be strings, found number 1");
        fails("storage:\n  sqlite: !custom {path: x}\n", &[], "storage.sqlite: YAML tags such as !custom");
        let yaml =
            "storage:\n  postgresql:\n    replicas:\n      - host: a\n        port: 5433\n  sqlite:\n    \
                    busyTimeout: 2.5\n    x: null\n";
        let expected = json!({"postgresql": {"replicas": [{"host": "a", "port": 5433}]},
                              "sqlite": {"busyTimeout": 2.5, "x": null}});
        assert_eq!(storage(yaml, &[]), expected);
        let merged = "base: &b {walMode: false}\nstorage:\n  sqlite:\n    <<: *b\n    path: /x\n";
        assert_eq!(storage(merged, &[]), json!({"sqlite": {"walMode": false, "path": "/x"}}));
    }

    #[test]
    fn interpolation() {
        let env = [("PGPORT", "6543"), ("HOST", "db"), ("EMPTY", ""), ("PW", "s3cr3t"), ("ZERO", "007")];
        let yaml = r#"storage:
  postgresql:
    host: ${HOST}
    port: ${PGPORT}
    database: ${DB:-parallax}
    username: ${EMPTY:-admin}
    password: ${PW}
    url: "postgres://${HOST}:${PGPORT}/x"
  sqlite:
    walMode: ${WAL:-true}
    path: "$${HOME}/a$b"
    synchronous: ${EMPTY}
    readPoolSize: ${ZERO}
    a: "${PGPORT}}"
    b: ${PGPORT}${PGPORT}
"#;
        let expected = json!({
            "postgresql": {"host": "db", "port": 6543, "database": "parallax", "username": "admin",
                           "password": "s3cr3t", "url": "postgres://db:6543/x"},
            "sqlite": {"walMode": true, "path": "${HOME}/a$b", "synchronous": null, "readPoolSize": "007",
                       "a": "6543}", "b": "65436543"}
        });
        assert_eq!(storage(yaml, &env), expected);
    }

    #[test]
    fn retyping() {
        assert_eq!(retype("5000".into()), json!(5000));
        assert_eq!(retype("-3".into()), json!(-3));
        assert_eq!(retype("1.5".into()), json!(1.5));
        assert_eq!(retype("FALSE".into()), json!(false));
        for s in ["+5", "1e3", "#abc", "0x10", "yes", " 5", "abc"] {
            assert_eq!(retype(s.into()), json!(s), "{s}");
        }
    }

    #[test]
    fn interpolation_errors_never_show_values() {
        let yaml = "storage:\n  postgresql:\n    password: ${POSTGRES_PASSWORD}\n";
        let e = run(yaml, &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("storage.postgresql.password"));
        let expected = "parallax.config.yaml: storage.postgresql.password references ${POSTGRES_PASSWORD}, \
                        which is not set; export it or write ${POSTGRES_PASSWORD:-default}";
        assert_eq!(e.to_string(), expected);
        let yaml = "storage:\n  postgresql:\n    password: \"abc${PW\"\n";
        let e = fails(yaml, &[("PW", "x")], "storage.postgresql.password has an unterminated ${");
        assert!(!e.contains("abc"), "{e}");
        fails("storage:\n  type: ${1X}\n", &[], "storage.type references ${1X}, which is not a valid");
        fails("storage:\n  type: ${A:-${B}}\n", &[], "nested");
        let yaml = "storage:\n  postgresql:\n    replicas: [{host: '${RH}'}]\n";
        fails(yaml, &[], "storage.postgresql.replicas[0].host references ${RH}");
    }

    #[test]
    fn a_target_config_is_interpolated_but_never_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prod.yaml");
        let yaml =
            "storage:\n  type: postgresql\n  postgresql:\n    host: ${PGHOST:-db}\n    port: 5432\n    \
                    database: prod\n    password: ${PROD_PW}\n";
        std::fs::write(&file, yaml).unwrap();
        // Everything the source's environment could say about "the" database.
        let env = env_of(&[
            ("PROD_PW", "pw"),
            ("PARALLAX_CONFIG", "/elsewhere.yaml"),
            ("PARALLAX_STORAGE_TYPE", "sqlite"),
            ("PARALLAX_DATABASE_URL", "postgres://u:p@source/src"),
            ("PARALLAX_DATABASE_HOST", "source"),
            ("PARALLAX_DATABASE_PORT", "6000"),
            ("PARALLAX_DATABASE_NAME", "src"),
            ("PARALLAX_DATABASE_USER", "me"),
            ("PARALLAX_DATABASE_PASSWORD", "srcpw"),
        ]);
        let got = resolve_target(&file, &env).unwrap();
        let expected = json!({"type": "postgresql", "postgresql": {"host": "db", "port": 5432,
                              "database": "prod", "password": "pw"}});
        assert_eq!((got.storage, got.source), (expected, Some(file.clone())));
        // The same file as the source's config does get the overrides: the difference is the point.
        let as_source = resolve_in(dir.path(), Some(&file), &env).unwrap();
        assert_eq!(as_source.storage["postgresql"]["url"], json!("postgres://u:p@source/src"));
        assert_eq!(as_source.storage["type"], json!("sqlite"));

        // Errors name the file; a missing variable is named, its value never shown.
        let e = resolve_target(&file, &env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("prod.yaml: storage.postgresql.password references ${PROD_PW}"), "{e}");
        let missing = dir.path().join("nope.yaml");
        let e = resolve_target(&missing, &env).unwrap_err().to_string();
        assert!(e.contains("nope.yaml (given with --to-config) does not exist"), "{e}");
        std::fs::write(&file, "storage: [1]\n").unwrap();
        let e = resolve_target(&file, &env).unwrap_err().to_string();
        assert!(e.contains("prod.yaml: storage must be a mapping"), "{e}");
    }

    #[test]
    fn environment_overrides() {
        let env = [
            ("PARALLAX_STORAGE_TYPE", "postgresql"),
            ("PARALLAX_DATABASE_URL", "postgres://u:p@h/d"),
            ("PARALLAX_DATABASE_HOST", "h2"),
            ("PARALLAX_DATABASE_PORT", "5433"),
            ("PARALLAX_DATABASE_NAME", "db"),
            ("PARALLAX_DATABASE_USER", "me"),
            ("PARALLAX_DATABASE_PASSWORD", "pw"),
        ];
        let expected = json!({"type": "postgresql", "sqlite": {"path": "/x"}, "postgresql": {
            "url": "postgres://u:p@h/d", "host": "h2", "port": 5433, "database": "db",
            "username": "me", "password": "pw"}});
        assert_eq!(
            storage("storage:\n  type: sqlite\n  postgresql:\n  sqlite: {path: /x}\n", &env),
            expected
        );
        // Without a file the overrides still apply; empty values are ignored.
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[("PARALLAX_DATABASE_HOST", "h"), ("PARALLAX_STORAGE_TYPE", "")]);
        let got = resolve_in(dir.path(), None, &env).unwrap();
        assert_eq!(got.storage, json!({"postgresql": {"host": "h"}}));

        let e = fails(
            "",
            &[("PARALLAX_DATABASE_PORT", "fivefour")],
            "PARALLAX_DATABASE_PORT: must be an integer",
        );
        assert_eq!(e, "PARALLAX_DATABASE_PORT: must be an integer port number, found \"fivefour\"");
        let vars = [("PARALLAX_DATABASE_PASSWORD", "secret")];
        let e = fails("storage: {postgresql: 3}", &vars, "PARALLAX_DATABASE_PASSWORD: cannot apply");
        assert!(!e.contains("secret"), "{e}");
    }
}
