//! The plugin's typed view of the `storage` section of `parallax.config.yaml`.
//!
//! The host reads the YAML, interpolates `${VAR}` references, applies environment overrides and hands the
//! section over as JSON; [`parse`] validates it strictly. Unknown keys, wrong types and bad values are
//! errors naming the full key path (e.g. `storage.sqlite.busyTimeout`). A key set to `null` (in YAML, a key
//! with nothing after the colon) counts as not set and takes its default.

pub mod cron;
pub mod duration;
mod output;
mod parse;
mod reader;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use cron::CronSchedule;
pub use parse::parse;

/// A configuration error: the key path (e.g. `storage.sqlite.busyTimeout`) and what is wrong with it.
/// Messages never contain the value of a secret (`password`, `url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A secret string (password, connection URL). `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The actual value, for handing to a driver. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Defines a configuration enum with its YAML spellings, `as_str` and `Display`.
macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value with its spelling in the configuration file.
            pub const CHOICES: &'static [(&'static str, $name)] = &[$(($text, $name::$variant)),+];

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum!(
    /// `storage.type`.
    BackendType { Postgresql = "postgresql", Sqlite = "sqlite", File = "file" }
);
config_enum!(
    /// `storage.sqlite.synchronous`, SQLite's `PRAGMA synchronous`.
    Synchronous { Off = "off", Normal = "normal", Full = "full", Extra = "extra" }
);
config_enum!(
    /// `storage.file.format`.
    FileFormat { Yaml = "yaml", Json = "json" }
);
config_enum!(
    /// `storage.postgresql.ssl.mode`, with libpq's meanings.
    SslMode {
        Disable = "disable",
        Prefer = "prefer",
        Require = "require",
        VerifyCa = "verify-ca",
        VerifyFull = "verify-full",
    }
);
config_enum!(
    /// `storage.postgresql.readPreference`.
    ReadPreference { Primary = "primary", Replica = "replica", Any = "any" }
);

impl Synchronous {
    /// The value for `PRAGMA synchronous = …`.
    pub fn as_sql(&self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// The whole `storage` section.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub backend: BackendType,
    /// Present when `storage.postgresql` was written or `storage.type` is postgresql.
    pub postgresql: Option<PostgresConfig>,
    /// Always filled in (defaults when absent), whichever backend is selected.
    pub sqlite: SqliteConfig,
    /// Present when `storage.file.basePath` is set.
    pub file: Option<FileConfig>,
    pub migrations: MigrationsConfig,
    pub retention: RetentionConfig,
    /// `storage.archive`: how archive destinations are reached (S3 settings over the AWS environment).
    pub archive: ArchiveConfig,
    /// `storage.metrics` (ours): what the plugin records and how its scrape is shaped.
    pub metrics: MetricsConfig,
}

#[derive(Clone, Debug)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub wal_mode: bool,
    pub busy_timeout_ms: u64,
    pub synchronous: Synchronous,
    pub read_pool_size: u32,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: PathBuf::from("./parallax.db"),
            wal_mode: true,
            busy_timeout_ms: 5000,
            synchronous: Synchronous::Full,
            read_pool_size: 4,
        }
    }
}

/// `storage.metrics` (ours). Parsed in `parse.rs`; every key optional.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    /// `enabled` (default true): record call latencies and errors. When false, calls record nothing and the
    /// `metrics` op answers `InvalidInput` naming the key (benchmarks compare the two).
    pub enabled: bool,
    /// `latencyBuckets` (seconds, strictly increasing, positive): export
    /// `parallax_storage_operation_duration_seconds` as a histogram with these buckets instead of a summary.
    /// Histograms aggregate across pods (`histogram_quantile(0.99, sum by (le, operation, table) (rate(…)))`);
    /// a summary's quantiles do not, but the documented alert (`{quantile="0.99"} > 1`) needs the summary.
    pub latency_buckets: Option<Vec<f64>>,
    /// `quantiles` (default 0.5, 0.9, 0.95, 0.99): the summary's quantiles, each in 0..=1, distinct (kept
    /// sorted).
    pub quantiles: Vec<f64>,
    /// `summaryWindow` (default 60s): the summary's quantiles cover the calls of the last window (between two
    /// thirds of it and all of it: it moves a third at a time). A duration with a unit (`"60s"`, `"5m"`) or an
    /// integer of milliseconds, 1 ms to 1 day.
    pub summary_window_ms: u64,
    /// `statsInterval` (default 30s): how often table rows and sizes (and the retention history) are refreshed
    /// in the background; a scrape only reads the cached values. Written as `summaryWindow`.
    pub stats_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            latency_buckets: None,
            quantiles: vec![0.5, 0.9, 0.95, 0.99],
            summary_window_ms: 60_000,
            stats_interval_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationsConfig {
    pub enabled: bool,
    pub auto_run: bool,
}

impl Default for MigrationsConfig {
    fn default() -> Self {
        MigrationsConfig { enabled: true, auto_run: true }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileConfig {
    pub base_path: PathBuf,
    pub format: FileFormat,
    pub compress: bool,
}

#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// A `postgres://` or `postgresql://` URL; when set, host/database/username are not.
    pub url: Option<Secret>,
    pub host: Option<String>,
    pub port: u16,
    pub database: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub pool: PoolConfig,
    pub ssl: SslConfig,
    /// `primary: {host, port}`: the primary's address, replacing the top-level `host`/`port` (or a single-host
    /// url's authority; the parser refuses both naming different servers). Its `port` is always filled in
    /// (5432 when not written). When `None`, the primary is `host`/`port` or the url's host.
    pub primary: Option<HostPort>,
    /// `replicas: [{host, port}]`: read replicas (hot standbys), in configuration order; each `port` is filled
    /// in (5432 when not written). They share the primary's database, user, password, pool and TLS settings.
    pub replicas: Vec<HostPort>,
    /// `readPreference` (default `primary`): where the plain reads go.
    pub read_preference: ReadPreference,
    /// `storage.postgresql.maxReplicaLag` (ours): a replica whose replay lags the primary by more than this many
    /// milliseconds receives no reads until it catches up. Default 10000.
    pub max_replica_lag_ms: u64,
    /// How many months of `executions` partitions to keep created ahead of now (ours; default 3).
    pub partition_months_ahead: u32,
    /// `storage.postgresql.queryTimeout` (ours): the longest a call may wait for the server's answer on a
    /// pooled connection, or for a batch `COPY`, in milliseconds (default 30000; 0: no limit). Past it the
    /// call fails with `timeout` and the connection is closed: it bounds a server or network that accepts
    /// and then answers nothing.
    pub query_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub min_connections: u32,
    pub max_connections: u32,
    pub idle_timeout_ms: u64,
    pub max_idle_time_ms: u64,
    pub acquire_timeout_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_connections: 1,
            max_connections: 10,
            idle_timeout_ms: 60_000,
            max_idle_time_ms: 300_000,
            acquire_timeout_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslConfig {
    pub enabled: bool,
    pub mode: SslMode,
    /// CA bundle; without it verify-ca/verify-full use the system roots.
    pub ca: Option<PathBuf>,
}

impl SslConfig {
    /// The mode to connect with: `disable` unless `enabled` is true.
    pub fn effective_mode(&self) -> SslMode {
        if self.enabled {
            self.mode
        } else {
            SslMode::Disable
        }
    }
}

impl Default for SslConfig {
    fn default() -> Self {
        SslConfig { enabled: false, mode: SslMode::Prefer, ca: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct RetentionConfig {
    pub executions: Option<RetentionRule>,
    pub audit_logs: Option<RetentionRule>,
    pub cleanup_schedule: Option<CronSchedule>,
    /// `runSchedule` (ours, default true): whether a storage instance opened with this config runs the
    /// schedule. The `parallax` CLI opens with false except for `storage retention serve`, so a short-lived
    /// command never starts (and then cuts short) a run.
    pub run_schedule: bool,
    /// `archiveDestination` (ours): when set, a retention run archives what it removes there first
    /// (`s3://bucket/prefix/`, `file:///abs/path/` or an absolute path).
    pub archive_destination: Option<String>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            executions: None,
            audit_logs: None,
            cleanup_schedule: None,
            run_schedule: true,
            archive_destination: None,
        }
    }
}

/// `storage.archive` (ours): settings for archive destinations. Every S3 value falls back to the standard
/// AWS environment variable of the process that opens the storage (named on each field).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveConfig {
    /// `endpoint` / `AWS_ENDPOINT_URL`: an S3-compatible endpoint such as `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// `region` / `AWS_REGION` (then `AWS_DEFAULT_REGION`, then `us-east-1`).
    pub region: Option<String>,
    /// `accessKeyId` / `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `secretAccessKey` / `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<Secret>,
    /// `sessionToken` / `AWS_SESSION_TOKEN`.
    pub session_token: Option<Secret>,
    /// `allowHttp` / `AWS_ALLOW_HTTP`: allow a plain-HTTP endpoint (a local test server).
    pub allow_http: Option<bool>,
    /// `maxObjectSize` (bytes of compressed data, default 256 MiB): an object is closed and the next one
    /// started once it reaches this size; objects are also split by month.
    pub max_object_bytes: u64,
    /// `partSize` (bytes, default 8 MiB, at least 5 MiB as S3 requires): objects larger than this are
    /// uploaded in parts of this size, at most two in flight, so memory does not grow with the archive.
    pub part_size: u64,
    /// `retries` (default 3): retries of a failed request (server errors and broken connections only).
    pub retries: u32,
    /// `timeout` (milliseconds, default 30000): one request, body included.
    pub timeout_ms: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: None,
            max_object_bytes: 256 << 20,
            part_size: 8 << 20,
            retries: 3,
            timeout_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionRule {
    pub enabled: bool,
    pub max_age: Option<Duration>,
    /// Only for `executions`; always `None` for `auditLogs`.
    pub max_count: Option<u64>,
}

/// A key that parses but that this build does not act on. Remove rows as features land.
struct Unenforced {
    path: &'static str,
    reason: &'static str,
    is_set: fn(&StorageConfig) -> bool,
}

/// Empty: every key of this build is enforced (the mechanism stays for the next key that is not).
const NOT_ENFORCED: &[Unenforced] = &[];

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: BackendType::Sqlite,
            postgresql: None,
            sqlite: SqliteConfig::default(),
            file: None,
            migrations: MigrationsConfig::default(),
            retention: RetentionConfig::default(),
            archive: ArchiveConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl StorageConfig {
    /// One sentence per key that is configured but not enforced by this build, or that has no effect as
    /// configured.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = NOT_ENFORCED
            .iter()
            .filter(|u| (u.is_set)(self))
            .map(|u| format!("{} is configured but not enforced by this build: {}", u.path, u.reason))
            .collect();
        if let Some(pg) = &self.postgresql {
            let pref = pg.read_preference;
            if pg.replicas.is_empty() && pref != ReadPreference::Primary {
                w.push(format!(
                    "storage.postgresql.readPreference is {pref} but has no effect: no replicas configured \
                     (storage.postgresql.replicas); every read goes to the primary"
                ));
            }
            if !pg.replicas.is_empty() && pref == ReadPreference::Primary {
                w.push(format!(
                    "storage.postgresql.replicas lists {} but readPreference is primary: the replicas receive \
                     no reads; set storage.postgresql.readPreference to replica or any to use them",
                    plural(pg.replicas.len(), "replica")
                ));
            }
        }
        let r = &self.retention;
        let rule_on = |rule: &Option<RetentionRule>| rule.as_ref().is_some_and(|r| r.enabled);
        if r.cleanup_schedule.is_none() && (rule_on(&r.executions) || rule_on(&r.audit_logs)) {
            w.push(
                "storage.retention rules are set but storage.retention.cleanupSchedule is not: nothing runs \
                 them on a schedule; set cleanupSchedule (e.g. \"0 2 * * *\") or run `parallax storage \
                 retention run`"
                    .to_string(),
            );
        }
        if r.cleanup_schedule.is_some() && !rule_on(&r.executions) && !rule_on(&r.audit_logs) {
            w.push(
                "storage.retention.cleanupSchedule is set but no retention rule is enabled \
                 (storage.retention.executions / auditLogs): the schedule does nothing"
                    .to_string(),
            );
        }
        w
    }

    /// The configuration with every default filled in, camelCase keys as in the YAML, secrets as `***`.
    pub fn effective_json(&self) -> serde_json::Value {
        output::effective_json(self)
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests;
