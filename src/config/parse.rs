//! Building a [`StorageConfig`] from the JSON the host hands over.

use std::path::PathBuf;

use serde_json::Value;

use super::reader::{self, Section};
use super::{
    duration, ArchiveConfig, BackendType, ConfigError, CronSchedule, FileConfig, FileFormat, HostPort,
    MetricsConfig, MigrationsConfig, PoolConfig, PostgresConfig, ReadPreference, RetentionConfig,
    RetentionRule, SqliteConfig, SslConfig, SslMode, StorageConfig, Synchronous,
};

const MS: &str = "a non-negative integer (milliseconds)";
const PORT: &str = "a port number (integer 1-65535)";
const MAX_BUSY_TIMEOUT_MS: u64 = 3_600_000;

/// Parses and validates the `storage` section given as JSON text (`null` and `{}` give all defaults).
pub fn parse(json: &str) -> Result<StorageConfig, ConfigError> {
    let value: Value = serde_json::from_str(json).map_err(|e| {
        ConfigError::new(
            "storage",
            format!("the host passed invalid JSON (line {}, column {}): {e}", e.line(), e.column()),
        )
    })?;
    from_value(&value)
}

/// Parses and validates the `storage` section given as a JSON value.
fn from_value(value: &Value) -> Result<StorageConfig, ConfigError> {
    let root = Section::new("storage".into(), Some(value), reader::STORAGE_KEYS)?;
    let backend = root.choice("type", "backend", BackendType::CHOICES, BackendType::Sqlite)?;

    let pg_section = root.subsection("postgresql", reader::POSTGRES_KEYS)?;
    let postgresql = if pg_section.present() || backend == BackendType::Postgresql {
        Some(postgres(&pg_section, backend == BackendType::Postgresql)?)
    } else {
        None
    };

    let file_section = root.subsection("file", reader::FILE_KEYS)?;
    let file = file(&file_section)?;
    if backend == BackendType::File && file.is_none() {
        return Err(file_section.error("basePath", "required when storage.type is file"));
    }

    Ok(StorageConfig {
        backend,
        postgresql,
        sqlite: sqlite(&root.subsection("sqlite", reader::SQLITE_KEYS)?)?,
        file,
        migrations: migrations(&root.subsection("migrations", reader::MIGRATIONS_KEYS)?)?,
        retention: retention(&root.subsection("retention", reader::RETENTION_KEYS)?)?,
        archive: archive(&root.subsection("archive", reader::ARCHIVE_KEYS)?)?,
        metrics: metrics(&root.subsection("metrics", reader::METRICS_KEYS)?)?,
    })
}

fn path(section: &Section<'_>, key: &str) -> Result<Option<PathBuf>, ConfigError> {
    Ok(section.string(key)?.map(PathBuf::from))
}

fn sqlite(s: &Section<'_>) -> Result<SqliteConfig, ConfigError> {
    let d = SqliteConfig::default();
    Ok(SqliteConfig {
        path: path(s, "path")?.unwrap_or(d.path),
        wal_mode: s.bool("walMode", d.wal_mode)?,
        busy_timeout_ms: s.int("busyTimeout", MS, (0, MAX_BUSY_TIMEOUT_MS), d.busy_timeout_ms)?,
        synchronous: s.choice("synchronous", "synchronous mode", Synchronous::CHOICES, d.synchronous)?,
        read_pool_size: small(s.int("readPoolSize", "an integer 1-64", (1, 64), d.read_pool_size.into())?),
    })
}

fn file(s: &Section<'_>) -> Result<Option<FileConfig>, ConfigError> {
    let format = s.choice("format", "file format", FileFormat::CHOICES, FileFormat::Yaml)?;
    let compress = s.bool("compress", false)?;
    Ok(path(s, "basePath")?.map(|base_path| FileConfig { base_path, format, compress }))
}

fn migrations(s: &Section<'_>) -> Result<MigrationsConfig, ConfigError> {
    let d = MigrationsConfig::default();
    Ok(MigrationsConfig { enabled: s.bool("enabled", d.enabled)?, auto_run: s.bool("autoRun", d.auto_run)? })
}

/// Narrows a value already range-checked to fit in `u32`/`u16`.
fn small<T: TryFrom<u64> + Default>(n: u64) -> T {
    T::try_from(n).unwrap_or_default()
}

fn port(s: &Section<'_>, key: &str) -> Result<Option<u16>, ConfigError> {
    if s.get(key).is_none() {
        return Ok(None);
    }
    Ok(Some(small(s.int(key, PORT, (1, 65_535), 0)?)))
}

fn postgres(s: &Section<'_>, selected: bool) -> Result<PostgresConfig, ConfigError> {
    let url = s.secret("url")?;
    let host = s.string("host")?;
    let database = s.string("database")?;
    let username = s.string("username")?;
    let password = s.secret("password")?;

    if let Some(url) = &url {
        let text = url.expose();
        let rest = text.strip_prefix("postgresql://").or_else(|| text.strip_prefix("postgres://"));
        let Some(rest) = rest else {
            return Err(s.error("url", "must start with postgresql:// or postgres:// (value hidden)"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        // tokio-postgres ends the user info at the first `@` (`connect.rs` does the same to find the password),
        // so a raw `@` inside it would move the host into the password: refuse it, never quoting the value.
        if authority.matches('@').count() > 1 {
            return Err(s.error(
                "url",
                "the user info (user:password@) contains a raw '@': tokio-postgres would end it at \
                 the first one; percent-encode every '@' of the user name and password as %40 (value hidden)",
            ));
        }
        let userinfo = authority.split_once('@').map(|(u, _)| u);
        if userinfo.is_some_and(|u| u.contains(':')) && password.is_some() {
            return Err(s.error("password", "the url already contains a password; set only one of them"));
        }
        let conflicting: Vec<&str> =
            ["host", "port", "database", "username"].into_iter().filter(|k| s.get(k).is_some()).collect();
        if !conflicting.is_empty() {
            let msg = format!(
                "both url and {} are set; use either url or host/port/database/username \
                 (PARALLAX_DATABASE_URL sets url)",
                conflicting.join("/")
            );
            return Err(ConfigError::new(s.path(), msg));
        }
    }
    let primary_section = s.subsection("primary", reader::HOST_PORT_KEYS)?;
    let primary = if primary_section.present() { Some(host_port(&primary_section)?) } else { None };
    if url.is_none() && selected {
        if host.is_none() && primary.is_none() {
            let msg = "storage.type is postgresql but neither url nor host (nor primary) is set; set url \
                       (postgresql://user@host:5432/db) or host (or primary.host), database and username";
            return Err(ConfigError::new(s.path(), msg));
        }
        for key in ["database", "username"] {
            if s.get(key).is_none() {
                return Err(s.error(
                    key,
                    "required when storage.postgresql.host or primary is set (or use url instead)",
                ));
            }
        }
    }

    let ssl = ssl(&s.subsection("ssl", reader::SSL_KEYS)?)?;
    let replicas = match s.get("replicas") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{}[{i}]", s.key_path("replicas"));
                host_port(&Section::new(path, Some(item), reader::HOST_PORT_KEYS)?)
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            let found = reader::describe(other, false);
            return Err(
                s.error("replicas", format!("expected a list of {{host, port}} mappings, found {found}"))
            );
        }
    };

    let top_port = port(s, "port")?;
    let primary = check_primary(s, url.as_ref(), host.as_deref(), top_port, primary, &replicas)?;
    let replicas =
        replicas.into_iter().map(|r| HostPort { port: Some(r.port.unwrap_or(DEFAULT_PORT)), ..r }).collect();

    Ok(PostgresConfig {
        url,
        host,
        port: top_port.unwrap_or(DEFAULT_PORT),
        database,
        username,
        password,
        pool: pool(&s.subsection("pool", reader::POOL_KEYS)?)?,
        ssl,
        primary,
        replicas,
        read_preference: s.choice(
            "readPreference",
            "read preference",
            ReadPreference::CHOICES,
            ReadPreference::Primary,
        )?,
        max_replica_lag_ms: max_replica_lag(s)?,
        partition_months_ahead: s.int("partitionMonthsAhead", "an integer 1-120 (months)", (1, 120), 3)?
            as u32,
        query_timeout_ms: s.int(
            "queryTimeout",
            "a non-negative integer (milliseconds; 0: no limit)",
            (0, u64::MAX),
            30_000,
        )?,
    })
}

const DEFAULT_PORT: u16 = 5432;
/// `maxReplicaLag`: milliseconds, 100 ms to a day, default 10 s.
const MIN_REPLICA_LAG_MS: u64 = 100;
const MAX_REPLICA_LAG_MS: u64 = 86_400_000;
const DEFAULT_REPLICA_LAG_MS: u64 = 10_000;

/// `maxReplicaLag`: an integer of milliseconds (as the pool's durations), 100 to 86400000.
fn max_replica_lag(s: &Section<'_>) -> Result<u64, ConfigError> {
    const KEY: &str = "maxReplicaLag";
    let form =
        "an integer of milliseconds between 100 and 86400000 (0.1 s to 1 day), e.g. 10000 for 10 s (the \
                default)";
    let Some(value) = s.get(KEY) else { return Ok(DEFAULT_REPLICA_LAG_MS) };
    let Some(ms) = value.as_u64() else {
        let mut msg = format!("expected {form}, found {}", reader::describe(value, false));
        if value
            .as_str()
            .is_some_and(|t| !t.trim().is_empty() && t.trim().chars().all(|c| c.is_ascii_digit()))
        {
            msg.push_str(" (write it without quotes)");
        }
        return Err(s.error(KEY, msg));
    };
    if !(MIN_REPLICA_LAG_MS..=MAX_REPLICA_LAG_MS).contains(&ms) {
        return Err(
            s.error(KEY, format!("must be between 100 and 86400000 milliseconds, found {ms}; write {form}"))
        );
    }
    Ok(ms)
}

/// `host:port` as written in messages (`[::1]:5432` for an IPv6 address).
fn show(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The hosts of a URL's authority (`user@h1:5432,h2/db` → `[(h1, 5432), (h2, 5432)]`); empty when the URL
/// names no host there (a socket directory or `host=` parameter instead); `None` when the authority cannot be
/// read safely (an `@` after it or a port that is not a number: a user info with a raw `/`, `?` or `#`), so
/// nothing that may belong to the user info is ever quoted.
fn url_hosts(url: &str) -> Option<Vec<(String, u16)>> {
    let rest = url.strip_prefix("postgresql://").or_else(|| url.strip_prefix("postgres://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if rest[authority.len()..].contains('@') {
        return None;
    }
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hosts.is_empty() {
        return Some(Vec::new());
    }
    hosts
        .split(',')
        .map(|h| {
            let (host, port) = match h.strip_prefix('[').and_then(|h| h.split_once(']')) {
                Some((v6, rest)) => (v6, rest.strip_prefix(':')),
                None => match h.rsplit_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (h, None),
                },
            };
            let port = match port {
                None | Some("") => DEFAULT_PORT,
                Some(p) => p.parse().ok()?,
            };
            Some((host.to_string(), port))
        })
        .collect()
}

/// Whether the query string of a URL sets a host (then its authority does not say where the server is).
fn url_query_names_host(url: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    query.split('&').any(|pair| matches!(pair.split('=').next(), Some("host" | "hostaddr" | "port")))
}

/// `primary` may replace the top-level `host`/`port` or a single-host url's authority. Both set and naming
/// different servers is an error naming both; the same server is fine. A url listing several hosts cannot
/// be combined with `primary` or `replicas` (which of them is the primary would be a guess). Returns the
/// primary with its port filled in (5432 when not written).
fn check_primary(
    s: &Section<'_>,
    url: Option<&super::Secret>,
    host: Option<&str>,
    top_port: Option<u16>,
    primary: Option<HostPort>,
    replicas: &[HostPort],
) -> Result<Option<HostPort>, ConfigError> {
    let at = s.key_path("primary");
    if let Some(url) = url {
        let Some(hosts) = url_hosts(url.expose()) else {
            if primary.is_none() && replicas.is_empty() {
                return Ok(None);
            }
            let msg =
                "the url's host:port cannot be read to compare it with primary/replicas (value hidden); \
                       percent-encode '/', '?', '#' and '@' in its user name and password";
            return Err(ConfigError::new(s.key_path("url"), msg));
        };
        if hosts.len() > 1 && (primary.is_some() || !replicas.is_empty()) {
            let listed: Vec<String> = hosts.iter().map(|(h, p)| show(h, *p)).collect();
            let with = if primary.is_some() { "primary" } else { "replicas" };
            let msg = format!(
                "the url lists several hosts ({}) and {with} is set: which of them is the primary would be a \
                 guess; write one host in the url (or set primary and drop the hosts from the url) and list the \
                 standbys under replicas",
                listed.join(",")
            );
            return Err(ConfigError::new(if primary.is_some() { at } else { s.key_path("replicas") }, msg));
        }
        let Some(p) = primary else { return Ok(None) };
        let pport = p.port.unwrap_or(DEFAULT_PORT);
        match hosts.first() {
            Some((uh, up)) if !(uh.eq_ignore_ascii_case(&p.host) && *up == pport) => {
                let msg = format!(
                    "both url (server {}) and primary ({}) are set and name different servers; set one of \
                     them: primary replaces the url's host:port (or drop primary and keep the url)",
                    show(uh, *up),
                    show(&p.host, pport)
                );
                return Err(ConfigError::new(at, msg));
            }
            None if url_query_names_host(url.expose()) => {
                let msg = format!(
                    "the url sets the server in its parameters (host=/hostaddr=/port=) and primary ({}) is set \
                     too; set the server in one place: postgresql://user@host:port/db with primary, or drop \
                     primary",
                    show(&p.host, pport)
                );
                return Err(ConfigError::new(at, msg));
            }
            _ => {}
        }
        return Ok(Some(HostPort { host: p.host, port: Some(pport) }));
    }
    let Some(p) = primary else { return Ok(None) };
    let pport = p.port.unwrap_or(DEFAULT_PORT);
    if host.is_some() || top_port.is_some() {
        let (th, tp) = (host.unwrap_or(&p.host), top_port.unwrap_or(DEFAULT_PORT));
        if !(th.eq_ignore_ascii_case(&p.host) && tp == pport) {
            let top = match host {
                Some(h) => format!("host/port ({})", show(h, tp)),
                None => format!("port ({tp})"),
            };
            let msg = format!(
                "both {top} and primary ({}) are set and differ; set one of them (primary replaces \
                 host/port)",
                show(&p.host, pport)
            );
            return Err(ConfigError::new(at, msg));
        }
    }
    Ok(Some(HostPort { host: p.host, port: Some(pport) }))
}

fn pool(s: &Section<'_>) -> Result<PoolConfig, ConfigError> {
    let d = PoolConfig::default();
    let max = s.int("maxConnections", "an integer 1-10000", (1, 10_000), d.max_connections.into())?;
    let min = s.int("minConnections", "a non-negative integer", (0, 10_000), d.min_connections.into())?;
    if min > max {
        return Err(s.error("minConnections", format!("must not exceed maxConnections ({max}), found {min}")));
    }
    Ok(PoolConfig {
        min_connections: small(min),
        max_connections: small(max),
        idle_timeout_ms: s.int("idleTimeout", MS, (0, u64::MAX), d.idle_timeout_ms)?,
        max_idle_time_ms: s.int("maxIdleTime", MS, (0, u64::MAX), d.max_idle_time_ms)?,
        acquire_timeout_ms: s.int("acquireTimeout", MS, (0, u64::MAX), d.acquire_timeout_ms)?,
    })
}

fn ssl(s: &Section<'_>) -> Result<SslConfig, ConfigError> {
    let d = SslConfig::default();
    let enabled = s.bool("enabled", d.enabled)?;
    let mode = s.choice("mode", "ssl mode", SslMode::CHOICES, d.mode)?;
    if !enabled && matches!(mode, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) {
        let msg = format!("{mode} needs TLS, but {}.enabled is false; set enabled: true", s.path());
        return Err(s.error("mode", msg));
    }
    Ok(SslConfig { enabled, mode, ca: path(s, "ca")? })
}

fn host_port(s: &Section<'_>) -> Result<HostPort, ConfigError> {
    let Some(host) = s.string("host")? else {
        return Err(s.error("host", "required"));
    };
    Ok(HostPort { host, port: port(s, "port")? })
}

fn retention(s: &Section<'_>) -> Result<RetentionConfig, ConfigError> {
    let executions = s.subsection("executions", reader::EXECUTIONS_KEYS)?;
    let audit_logs = s.subsection("auditLogs", reader::AUDIT_LOGS_KEYS)?;
    let cleanup_schedule = match s.get("cleanupSchedule") {
        None => None,
        Some(Value::String(expr)) => {
            Some(CronSchedule::parse(expr).map_err(|msg| s.error("cleanupSchedule", msg))?)
        }
        Some(other) => {
            let found = reader::describe(other, false);
            let msg = format!("expected a cron expression string such as \"0 2 * * *\", found {found}");
            return Err(s.error("cleanupSchedule", msg));
        }
    };
    Ok(RetentionConfig {
        executions: executions.present().then(|| rule(&executions)).transpose()?,
        audit_logs: audit_logs.present().then(|| rule(&audit_logs)).transpose()?,
        cleanup_schedule,
        run_schedule: s.bool("runSchedule", true)?,
        archive_destination: archive_destination(s)?,
    })
}

/// `archiveDestination`: the syntax only (no I/O: the config is read before any destination is reachable).
fn archive_destination(s: &Section<'_>) -> Result<Option<String>, ConfigError> {
    let Some(text) = s.string("archiveDestination")? else {
        return Ok(None);
    };
    crate::archive::destination::check_syntax(&text, false).map_err(|m| s.error("archiveDestination", m))?;
    Ok(Some(text.trim().to_string()))
}

const MIB: u64 = 1 << 20;
/// S3's part sizes: at least 5 MiB (but the last), at most 5 GiB; at most 10,000 parts per object.
const MIN_PART: u64 = 5 * MIB;
const MAX_PART: u64 = 5 << 30;
const MAX_PARTS: u64 = 10_000;

fn archive(s: &Section<'_>) -> Result<ArchiveConfig, ConfigError> {
    let d = ArchiveConfig::default();
    let endpoint = s.string("endpoint")?.map(|e| e.trim().to_string());
    if let Some(e) = &endpoint {
        let lower = e.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://")) else {
            let found = reader::describe(&Value::String(e.clone()), false);
            return Err(s.error(
                "endpoint",
                format!("expected an http:// or https:// URL such as http://127.0.0.1:9000, found {found}"),
            ));
        };
        // Anywhere: a password may contain a `/`.
        if rest.contains('@') {
            return Err(s.error(
                "endpoint",
                "must not carry credentials (user:password@); set accessKeyId and secretAccessKey instead                  (value hidden)",
            ));
        }
        if rest.split('/').next().unwrap_or("").is_empty() {
            return Err(s.error("endpoint", format!("has no host: {e:?}")));
        }
    }
    let part_size =
        s.int("partSize", "an integer (bytes, at least 5242880 = 5 MiB)", (MIN_PART, MAX_PART), d.part_size)?;
    let max_object_bytes =
        s.int("maxObjectSize", "an integer (bytes)", (1, u64::MAX), d.max_object_bytes.max(part_size))?;
    if max_object_bytes < part_size {
        let msg = format!("must be at least partSize ({part_size} bytes), found {max_object_bytes}");
        return Err(s.error("maxObjectSize", msg));
    }
    if max_object_bytes > part_size.saturating_mul(MAX_PARTS) {
        let msg = format!(
            "must be at most 10000 parts of partSize ({} bytes; S3 allows 10000 parts per object), found \
             {max_object_bytes}; raise partSize or lower maxObjectSize",
            part_size.saturating_mul(MAX_PARTS)
        );
        return Err(s.error("maxObjectSize", msg));
    }
    Ok(ArchiveConfig {
        endpoint,
        region: s.string("region")?.map(|r| r.trim().to_string()),
        // Not a secret, but not shown in errors either (read like one).
        access_key_id: s.secret("accessKeyId")?.map(|k| k.expose().trim().to_string()),
        secret_access_key: s.secret("secretAccessKey")?,
        session_token: s.secret("sessionToken")?,
        allow_http: s.opt_bool("allowHttp")?,
        max_object_bytes,
        part_size,
        retries: small(s.int("retries", "an integer 0-20", (0, 20), d.retries.into())?),
        timeout_ms: s.int("timeout", "an integer (milliseconds, 1-3600000)", (1, 3_600_000), d.timeout_ms)?,
    })
}

fn rule(s: &Section<'_>) -> Result<RetentionRule, ConfigError> {
    let max_age = match s.get("maxAge") {
        None => None,
        Some(Value::String(text)) => Some(duration::parse_age(text).map_err(|m| s.error("maxAge", m))?),
        Some(Value::Number(n)) => {
            let msg = format!("missing unit in {n}; write e.g. {n}d or {n}h (units: s, m, h, d, w)");
            return Err(s.error("maxAge", msg));
        }
        Some(other) => {
            let found = reader::describe(other, false);
            return Err(s.error("maxAge", format!("expected an age such as \"30d\", found {found}")));
        }
    };
    let max_count = match s.get("maxCount") {
        None => None,
        Some(_) => Some(s.int("maxCount", "a positive integer", (1, u64::MAX), 0)?),
    };
    Ok(RetentionRule { enabled: s.bool("enabled", true)?, max_age, max_count })
}

/// The longest `summaryWindow` / `statsInterval`: a day.
const MAX_METRICS_MS: u64 = 86_400_000;

fn metrics(s: &Section<'_>) -> Result<MetricsConfig, ConfigError> {
    let d = MetricsConfig::default();
    let latency_buckets = match s.get("latencyBuckets") {
        None => None,
        Some(_) => {
            let form = "a list of bucket upper bounds in seconds, positive and strictly increasing, e.g. \
                        [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]";
            let buckets = numbers(s, "latencyBuckets", form)?;
            if buckets.is_empty() {
                let msg = format!("must not be empty; remove the key for the summary, or write {form}");
                return Err(s.error("latencyBuckets", msg));
            }
            for (i, b) in buckets.iter().enumerate() {
                let at = format!("{}[{i}]", s.key_path("latencyBuckets"));
                if *b <= 0.0 {
                    return Err(ConfigError::new(
                        at,
                        format!("must be greater than 0, found {b}; write {form}"),
                    ));
                }
                if i > 0 && *b <= buckets[i - 1] {
                    let msg = format!(
                        "must be greater than the bound before it ({}), found {b}; write {form}",
                        buckets[i - 1]
                    );
                    return Err(ConfigError::new(at, msg));
                }
            }
            Some(buckets)
        }
    };
    let quantiles = match s.get("quantiles") {
        None => d.quantiles,
        Some(_) => {
            let form = "a list of distinct quantiles between 0 and 1, e.g. [0.5, 0.9, 0.95, 0.99]";
            let mut q = numbers(s, "quantiles", form)?;
            if q.is_empty() {
                return Err(s.error("quantiles", format!("must not be empty; write {form}")));
            }
            for (i, v) in q.iter().enumerate() {
                if !(0.0..=1.0).contains(v) {
                    let at = format!("{}[{i}]", s.key_path("quantiles"));
                    return Err(ConfigError::new(
                        at,
                        format!("must be between 0 and 1, found {v}; write {form}"),
                    ));
                }
            }
            q.sort_by(f64::total_cmp);
            if let Some(w) = q.windows(2).find(|w| w[0] == w[1]) {
                return Err(s.error("quantiles", format!("lists {} twice; write {form}", w[0])));
            }
            q
        }
    };
    Ok(MetricsConfig {
        enabled: s.bool("enabled", d.enabled)?,
        latency_buckets,
        quantiles,
        summary_window_ms: millis(s, "summaryWindow", d.summary_window_ms)?,
        stats_interval_ms: millis(s, "statsInterval", d.stats_interval_ms)?,
    })
}

/// A list of finite numbers.
fn numbers(s: &Section<'_>, key: &str, form: &str) -> Result<Vec<f64>, ConfigError> {
    let Some(value) = s.get(key) else { return Ok(Vec::new()) };
    let Value::Array(items) = value else {
        return Err(s.error(key, format!("expected {form}, found {}", reader::describe(value, false))));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_f64().filter(|n| n.is_finite()).ok_or_else(|| {
                let at = format!("{}[{i}]", s.key_path(key));
                ConfigError::new(
                    at,
                    format!("expected a number, found {}; write {form}", reader::describe(item, false)),
                )
            })
        })
        .collect()
}

/// A duration of at least 1 ms and at most a day: an integer of milliseconds (as the other duration keys) or
/// a string with a unit (`"30s"`, `"5m"`, `"500ms"`).
fn millis(s: &Section<'_>, key: &str, default: u64) -> Result<u64, ConfigError> {
    let form =
        "a duration such as \"30s\", \"5m\" or \"500ms\", or an integer of milliseconds, between 1 ms \
                and 1 day";
    let ms = match s.get(key) {
        None => return Ok(default),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(ms) => ms,
            None => return Err(s.error(key, format!("expected {form}, found number {n}"))),
        },
        Some(Value::String(text)) => {
            let d = duration::parse_age(text).map_err(|m| s.error(key, format!("{m}; expected {form}")))?;
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        }
        Some(other) => {
            return Err(s.error(key, format!("expected {form}, found {}", reader::describe(other, false))))
        }
    };
    if ms == 0 || ms > MAX_METRICS_MS {
        return Err(s.error(key, format!("must be between 1 ms and 1 day, found {ms} ms; write {form}")));
    }
    Ok(ms)
}
