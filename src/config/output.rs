//! The effective configuration as JSON, for `parallax storage config`-style output and logs.

use std::path::Path;

use serde_json::{json, Value};

use super::{duration, HostPort, PostgresConfig, RetentionRule, Secret, StorageConfig};

const HIDDEN: &str = "***";

fn secret(s: &Option<Secret>) -> Value {
    s.as_ref().map_or(Value::Null, |_| Value::from(HIDDEN))
}

fn path(p: &Path) -> Value {
    Value::from(p.to_string_lossy().into_owned())
}

fn host_port(hp: &HostPort) -> Value {
    json!({ "host": hp.host, "port": hp.port })
}

fn rule(r: &Option<RetentionRule>, with_count: bool) -> Value {
    let Some(r) = r else { return Value::Null };
    let mut v = json!({
        "enabled": r.enabled,
        "maxAge": r.max_age.map(duration::format_age),
    });
    if with_count {
        v["maxCount"] = json!(r.max_count);
    }
    v
}

fn postgres(p: &PostgresConfig) -> Value {
    json!({
        "url": secret(&p.url),
        "host": p.host,
        // With a url the port comes from the url; with primary alone, from primary.
        "port": if p.url.is_some() || (p.primary.is_some() && p.host.is_none()) { Value::Null } else { p.port.into() },
        "database": p.database,
        "username": p.username,
        "password": secret(&p.password),
        "pool": {
            "minConnections": p.pool.min_connections,
            "maxConnections": p.pool.max_connections,
            "idleTimeout": p.pool.idle_timeout_ms,
            "maxIdleTime": p.pool.max_idle_time_ms,
            "acquireTimeout": p.pool.acquire_timeout_ms,
        },
        "ssl": {
            "enabled": p.ssl.enabled,
            "mode": p.ssl.mode.as_str(),
            "ca": p.ssl.ca.as_deref().map(path),
        },
        "primary": p.primary.as_ref().map(host_port),
        "replicas": p.replicas.iter().map(host_port).collect::<Vec<_>>(),
        "readPreference": p.read_preference.as_str(),
        "maxReplicaLag": p.max_replica_lag_ms,
        "partitionMonthsAhead": p.partition_months_ahead,
        "queryTimeout": p.query_timeout_ms,
    })
}

pub(super) fn effective_json(c: &StorageConfig) -> Value {
    let mut v = json!({
        "type": c.backend.as_str(),
        "sqlite": {
            "path": path(&c.sqlite.path),
            "walMode": c.sqlite.wal_mode,
            "busyTimeout": c.sqlite.busy_timeout_ms,
            "synchronous": c.sqlite.synchronous.as_str(),
            "readPoolSize": c.sqlite.read_pool_size,
        },
        "migrations": {
            "enabled": c.migrations.enabled,
            "autoRun": c.migrations.auto_run,
        },
        "retention": {
            "executions": rule(&c.retention.executions, true),
            "auditLogs": rule(&c.retention.audit_logs, false),
            "cleanupSchedule": c.retention.cleanup_schedule.as_ref().map(|s| s.expr.clone()),
            "runSchedule": c.retention.run_schedule,
            "archiveDestination": c.retention.archive_destination,
        },
        "archive": {
            // Unset S3 values are null: the AWS environment of the process that opens the storage decides.
            "endpoint": c.archive.endpoint,
            "region": c.archive.region,
            "accessKeyId": c.archive.access_key_id,
            "secretAccessKey": secret(&c.archive.secret_access_key),
            "sessionToken": secret(&c.archive.session_token),
            "allowHttp": c.archive.allow_http,
            "maxObjectSize": c.archive.max_object_bytes,
            "partSize": c.archive.part_size,
            "retries": c.archive.retries,
            "timeout": c.archive.timeout_ms,
        },
        "metrics": {
            "enabled": c.metrics.enabled,
            "latencyBuckets": c.metrics.latency_buckets,
            "quantiles": c.metrics.quantiles,
            "summaryWindow": c.metrics.summary_window_ms,
            "statsInterval": c.metrics.stats_interval_ms,
        },
    });
    if let Some(p) = &c.postgresql {
        v["postgresql"] = postgres(p);
    }
    if let Some(f) = &c.file {
        v["file"] = json!({
            "basePath": path(&f.base_path),
            "format": f.format.as_str(),
            "compress": f.compress,
        });
    }
    v
}
