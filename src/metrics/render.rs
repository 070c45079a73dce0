//! A scrape: the registry's counters and latency metric, then the gauges read now (pool, disk, read routing) or
//! from the refresher's cache (tables, retention history), and build info. Never a query, never a wait for the
//! pool.

use std::{fmt::Write as _, time::Duration};

use super::{registry::Inner, HostMetrics, RoutingMetrics, Source, TableStat, FALLBACK_REASONS, TABLES};
use crate::{
    error::{Error, Result},
    retention::Store,
    time,
};

/// How long the first scrape of a storage object waits for the first refresh of the table statistics (so
/// that `parallax storage metrics` in a fresh process shows them); later scrapes never wait.
const FIRST_SCRAPE_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn render<S: Source + Store>(source: &S) -> Result<String> {
    let Some(m) = source.metrics().inner() else {
        return Err(Error::invalid(
            "metrics are turned off for this storage (storage.metrics.enabled is false); set \
             storage.metrics.enabled: true to export them",
        ));
    };
    if !m.first_scrape_done.swap(true, std::sync::atomic::Ordering::AcqRel) {
        let mut done = m.refreshed.subscribe();
        m.wanted.send_replace(true);
        // Timed out: render what there is (the table gauges appear once a refresh succeeds).
        let _ = tokio::time::timeout(FIRST_SCRAPE_WAIT, done.wait_for(|refreshed| *refreshed)).await;
    }
    let mut out = String::with_capacity(16 * 1024);
    m.latency.render(&mut out, std::time::Instant::now());
    out.push_str(&m.handle.render());
    if !out.ends_with('\n') {
        out.push('\n');
    }
    gauges(&mut out, source, m);
    Ok(out)
}

fn gauges<S: Source + Store>(out: &mut String, source: &S, m: &Inner) {
    let pool = source.pool_state();
    gauge(
        out,
        "parallax_storage_pool_connections_active",
        "Connections in use (PostgreSQL: checked out of the pool; SQLite: read connections checked out, plus \
         the writer while it runs a batch; file store: the writer while it writes).",
        pool.active as f64,
    );
    gauge(
        out,
        "parallax_storage_pool_connections_idle",
        "Open connections not in use (SQLite and file store count an idle writer as one).",
        pool.idle as f64,
    );
    gauge(
        out,
        "parallax_storage_pool_waiting_requests",
        "Calls waiting for a pooled connection, plus writes queued for the writer (SQLite, file store) that it \
         has not started.",
        pool.waiting as f64,
    );
    if let Some(free) = source.disk_free_bytes() {
        gauge(
            out,
            "parallax_storage_disk_free_bytes",
            "Bytes free for an unprivileged user on the filesystem holding the data (SQLite, file store).",
            free as f64,
        );
    }
    if let Some(r) = source.routing() {
        routing(out, &r);
    }
    let cache = m.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // Until the first refresh succeeds (or for a backend that reports no table) the families are left out.
    let summed = cache.tables.as_deref().map(per_table).unwrap_or_default();
    if !summed.is_empty() {
        header(
            out,
            "parallax_storage_table_rows",
            "gauge",
            "Rows per table (an estimate where the database keeps one), refreshed every statsInterval.",
        );
        for (table, rows, _) in &summed {
            sample(out, "parallax_storage_table_rows", &[("table", table)], *rows as f64);
        }
        header(
            out,
            "parallax_storage_table_size_bytes",
            "gauge",
            "Bytes on disk per table, indexes included, refreshed every statsInterval.",
        );
        for (table, _, bytes) in &summed {
            sample(out, "parallax_storage_table_size_bytes", &[("table", table)], *bytes as f64);
        }
    }
    if let Some(t) = cache.last_success {
        gauge(
            out,
            "parallax_storage_retention_last_success_timestamp_seconds",
            "When the last cleanup, archive or retention run that succeeded finished (Unix time); absent until \
             one has.",
            seconds(t),
        );
    }
    if let Some(t) = cache.last_failure {
        gauge(
            out,
            "parallax_storage_retention_last_failure_timestamp_seconds",
            "When the last cleanup, archive or retention run that failed finished (Unix time); absent until one \
             has.",
            seconds(t),
        );
    }
    if let Some(interval) = schedule_interval(source, time::now_micros()) {
        gauge(
            out,
            "parallax_storage_retention_schedule_interval_seconds",
            "Seconds between the next two runs of storage.retention.cleanupSchedule (exported where this \
             instance runs the schedule); a cleanup is overdue after two intervals without a success.",
            interval,
        );
    }
    header(
        out,
        "parallax_storage_build_info",
        "gauge",
        "The storage plugin's version, its ABI version and the backend; always 1.",
    );
    sample(
        out,
        "parallax_storage_build_info",
        &[
            ("plugin_version", crate::PLUGIN_VERSION),
            ("abi_version", parallax_storage_abi::ABI_VERSION),
            ("backend", m.backend),
        ],
        1.0,
    );
}

/// The read router's families (PostgreSQL with replicas). Every family whose samples would all be absent is
/// left out whole (no header without a sample). A `(host, role)` listed twice (the same address configured twice)
/// is rendered once, its reads summed, so the text never repeats a series.
fn routing(out: &mut String, r: &RoutingMetrics) {
    let mut hosts: Vec<(&str, &str, u64)> = Vec::with_capacity(r.hosts.len());
    for h in &r.hosts {
        match hosts.iter_mut().find(|(host, role, _)| *host == h.host && *role == h.role) {
            Some((_, _, reads)) => *reads += h.reads,
            None => hosts.push((&h.host, h.role, h.reads)),
        }
    }
    let mut replicas = Vec::with_capacity(r.hosts.len());
    for h in r.hosts.iter().filter(|h| h.role == "replica") {
        if !replicas.iter().any(|seen: &&HostMetrics| seen.host == h.host) {
            replicas.push(h);
        }
    }

    let name = "parallax_storage_reads_total";
    if !hosts.is_empty() {
        header(
            out,
            name,
            "counter",
            "Plain reads (get, list, count, search, audit and pattern reads) served by each PostgreSQL host; \
             role is primary or replica. Writes and reads inside a write always go to the primary and are not \
             counted.",
        );
        for (host, role, reads) in &hosts {
            sample(out, name, &[("host", host), ("role", role)], *reads as f64);
        }
    }
    let name = "parallax_storage_replica_fallbacks_total";
    header(
        out,
        name,
        "counter",
        "Reads meant for a replica that the primary served, by reason: unavailable (no replica up and within \
         maxReplicaLag), own_write (no replica had replayed this storage object's last write yet), error (the \
         read failed on a replica and was retried on the primary).",
    );
    for (reason, count) in FALLBACK_REASONS.iter().zip(r.fallbacks) {
        sample(out, name, &[("reason", reason)], count as f64);
    }
    let name = "parallax_storage_replica_up";
    // No sample for a replica nobody checks (readPreference primary): a 0 there would raise StorageReplicaDown
    // for a configuration that only draws a warning.
    let replicas: Vec<_> = replicas.into_iter().filter(|h| h.up.is_some()).collect();
    if !replicas.is_empty() {
        header(
            out,
            name,
            "gauge",
            "1 while the replica receives reads (reachable, a standby, and within maxReplicaLag at the last \
             health check), else 0 (not checked yet, unreachable, lagging, or not a standby).",
        );
        for h in &replicas {
            sample(out, name, &[("host", &h.host)], if h.up == Some(true) { 1.0 } else { 0.0 });
        }
    }
    let name = "parallax_storage_replica_lag_seconds";
    let lagging: Vec<_> = replicas.iter().filter_map(|h| Some((&h.host, h.lag_seconds?))).collect();
    if !lagging.is_empty() {
        header(
            out,
            name,
            "gauge",
            "How far the replica's replay is behind the primary, in seconds, from the last health check; absent \
             while unknown (not checked yet, or unreachable).",
        );
        for (host, lag) in lagging {
            sample(out, name, &[("host", host)], lag);
        }
    }
    let name = "parallax_storage_replica_max_lag_seconds";
    let limits: Vec<_> = replicas.iter().filter_map(|h| Some((&h.host, h.max_lag_seconds?))).collect();
    if !limits.is_empty() {
        header(
            out,
            name,
            "gauge",
            "storage.postgresql.maxReplicaLag in seconds: a replica lagging more stops receiving reads until it \
             catches up.",
        );
        for (host, max) in limits {
            sample(out, name, &[("host", host)], max);
        }
    }
}

/// Rows and bytes per documented table, in [`TABLES`] order, summing repeated entries (partitions) and
/// leaving out any other table.
fn per_table(stats: &[TableStat]) -> Vec<(&'static str, u64, u64)> {
    TABLES
        .iter()
        .filter(|t| stats.iter().any(|s| s.table == **t))
        .map(|t| {
            let of = stats.iter().filter(|s| s.table == *t);
            (*t, of.clone().map(|s| s.rows).sum(), of.map(|s| s.size_bytes).sum())
        })
        .collect()
}

/// The interval between the next two fire times of the retention schedule, when this instance runs it.
pub(super) fn schedule_interval<S: Store>(source: &S, now: i64) -> Option<f64> {
    let r = &source.storage_config().retention;
    if !r.run_schedule || !crate::retention::schedule::wanted(r) {
        return None;
    }
    let schedule = r.cleanup_schedule.as_ref()?;
    let first = schedule.next_after(now)?;
    let second = schedule.next_after(first)?;
    Some((second - first) as f64 / 1e6)
}

fn seconds(micros: i64) -> f64 {
    micros as f64 / 1e6
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    // Prometheus spells the non-finite values +Inf, -Inf and NaN (Rust: inf, -inf, NaN).
    match value {
        v if v == f64::INFINITY => out.push_str(" +Inf\n"),
        v if v == f64::NEG_INFINITY => out.push_str(" -Inf\n"),
        v if v.is_nan() => out.push_str(" NaN\n"),
        v => {
            let _ = writeln!(out, " {v}");
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    sample(out, name, &[], value);
}
