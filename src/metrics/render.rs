//! A scrape: the registry's counters and latency metric, then the gauges read now (pool, disk) or from the
//! refresher's cache (tables, retention history), and build info. Never a query, never a wait for the pool.

use std::{fmt::Write as _, time::Duration};

use super::{registry::Inner, Source, TableStat, TABLES};
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
    let cache = m.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(tables) = &cache.tables {
        let summed = per_table(tables);
        header(
            out,
            "parallax_storage_table_rows",
            "Rows per table (an estimate where the database keeps one), refreshed every statsInterval.",
        );
        for (table, rows, _) in &summed {
            sample(out, "parallax_storage_table_rows", &[("table", table)], *rows as f64);
        }
        header(
            out,
            "parallax_storage_table_size_bytes",
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

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} gauge");
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
    let _ = writeln!(out, " {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help);
    sample(out, name, &[], value);
}
