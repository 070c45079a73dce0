//! The plugin's metrics (issue 14): one registry per open storage object, rendered as Prometheus text by the
//! `metrics` maintenance op (`parallax_storage_abi::metrics`).
//!
//! A metrics crate inside a cdylib has its own statics, so a recorder the host installs never sees the plugin's
//! events; the plugin therefore keeps its own registry ([`Metrics`]) and the host asks for the text through the
//! ABI. Who records what:
//! - the ABI adapter ([`crate::adapter`]) records every call: its latency by `(operation, table)` and its
//!   errors by kind ([`Metrics::observe`]). The mapping from a call to its labels is [`call_labels`], the one
//!   home of that rule;
//! - each backend reports its pool ([`Source::pool_state`], read at every scrape: atomics and the pool's own
//!   counters, never a query), its table rows and sizes ([`Source::table_stats`], a catalog query run by the
//!   background refresher every `storage.metrics.statsInterval`, never by a scrape) and the free space of the
//!   filesystem holding its data ([`Source::disk_free_bytes`]; `None` on PostgreSQL, whose server disk a
//!   client cannot see);
//! - the retention and archive core records finished runs ([`Metrics::retention_finished`],
//!   [`Metrics::archive_written`]); the refresher also reads the recorded run history, so a process that did not
//!   run the cleanup itself (the CLI's `parallax storage metrics`) still exports its last success and failure.
//!
//! Metric names and labels (the README's Monitoring section lists them for operators):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `parallax_storage_operation_duration_seconds` | summary (histogram with `latencyBuckets`) | `operation`, `table` |
//! | `parallax_storage_errors_total` | counter | `operation`, `table`, `kind` |
//! | `parallax_storage_pool_connections_active` | gauge | |
//! | `parallax_storage_pool_connections_idle` | gauge | |
//! | `parallax_storage_pool_waiting_requests` | gauge | |
//! | `parallax_storage_pool_acquire_timeouts_total` | counter | |
//! | `parallax_storage_table_rows` | gauge | `table` |
//! | `parallax_storage_table_size_bytes` | gauge | `table` |
//! | `parallax_storage_disk_free_bytes` | gauge (SQLite, file store) | |
//! | `parallax_storage_retention_last_success_timestamp_seconds` | gauge | |
//! | `parallax_storage_retention_last_failure_timestamp_seconds` | gauge | |
//! | `parallax_storage_retention_schedule_interval_seconds` | gauge (when scheduled) | |
//! | `parallax_storage_retention_rows_removed_total` | counter | `table` |
//! | `parallax_storage_archive_bytes_total` | counter | |
//! | `parallax_storage_build_info` | gauge (always 1) | `plugin_version`, `abi_version`, `backend` |
//! | `parallax_storage_reads_total` | counter (PostgreSQL with replicas) | `host`, `role` |
//! | `parallax_storage_replica_fallbacks_total` | counter (PostgreSQL with replicas) | `reason` |
//! | `parallax_storage_replica_up` | gauge (PostgreSQL with replicas) | `host` |
//! | `parallax_storage_replica_lag_seconds` | gauge (PostgreSQL with replicas; absent while unknown) | `host` |
//! | `parallax_storage_replica_max_lag_seconds` | gauge (PostgreSQL with replicas) | `host` |

mod calls;
mod latency;
mod refresh;
mod registry;
mod render;
#[cfg(test)]
mod tests;

use std::{future::Future, sync::atomic::AtomicU64};

use crate::error::Result;

pub use registry::Metrics;

/// The `table` label values (the documented tables; `""` for calls that touch no one table).
pub const TABLES: &[&str] = &["patterns", "executions", "execution_events", "audit_logs"];

/// `(operation, table)` labels of an ABI call, by the adapter's call name (`"create_execution"` →
/// `("write", "executions")`). Operations: `read` (one row by key), `list` (a page), `count`, `search`,
/// `write` (insert or update), `delete`. `None` for calls that are not data operations (migrations, health,
/// ping, shutdown, maintenance): they are not in the latency summary, and their errors carry
/// `operation=<call name>`, `table=""`.
pub fn call_labels(call: &str) -> Option<(&'static str, &'static str)> {
    calls::index(call).and_then(|i| calls::CALLS[i].1)
}

/// A snapshot of a backend's pool, read at scrape time.
///
/// - PostgreSQL: the bb8 query pool. `active` = connections checked out, `idle` = open and idle, `waiting` =
///   callers inside `pool.get()` right now.
/// - SQLite: the read pool plus the writer. `active` = read connections checked out + 1 while the writer is
///   running a batch; `idle` = idle read connections + 1 while the writer is idle; `waiting` = callers waiting
///   for a read connection + writes queued for the writer that it has not started.
/// - File store: no pool; the writer thread counts as one connection (`active` 1 while it writes, else `idle`
///   1) and `waiting` = writes queued for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolState {
    pub active: u64,
    pub idle: u64,
    pub waiting: u64,
}

/// Rows and on-disk bytes of one table (`table` is one of [`TABLES`]). Estimates are fine (PostgreSQL's
/// `n_live_tup`/`reltuples`); a table split into partitions (or a file store directory) is summed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableStat {
    pub table: &'static str,
    pub rows: u64,
    pub size_bytes: u64,
}

/// A counter of callers waiting for something (the pool, the writer): hold [`WaitGauge::enter`]'s guard while
/// waiting. Backends keep one and report it in [`PoolState::waiting`].
#[derive(Debug, Default)]
pub struct WaitGauge(AtomicU64);

impl WaitGauge {
    /// Counts one waiter until the guard drops (also when the wait is cancelled or fails).
    pub fn enter(&self) -> WaitGuard<'_> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WaitGuard(&self.0)
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub struct WaitGuard<'a>(&'a AtomicU64);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a backend reports for its metrics. Part of every backend's contract ([`crate::contract::Contract`]).
pub trait Source: Send + Sync + 'static {
    /// This storage object's registry (built at open from `storage.metrics`).
    fn metrics(&self) -> &Metrics;

    /// Cheap and synchronous: atomics and the pool's own state, never a query or a lock held by a call.
    fn pool_state(&self) -> PoolState {
        PoolState::default()
    }

    /// Rows and bytes per table from the catalog; run by the background refresher, never by a scrape.
    fn table_stats(&self) -> impl Future<Output = Result<Vec<TableStat>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Free bytes for an unprivileged user on the filesystem holding the data (`statvfs` `f_bavail ×
    /// f_frsize`); `None` where the plugin cannot see the disk (PostgreSQL).
    fn disk_free_bytes(&self) -> Option<u64> {
        None
    }

    /// Read routing across PostgreSQL hosts (issue 15): per-host reads, state and lag, and the fallbacks to the
    /// primary. `None` when the storage object has no replicas configured (then nothing of it is rendered).
    /// Cheap and synchronous like [`Source::pool_state`]: the router's atomics, never a query.
    fn routing(&self) -> Option<RoutingMetrics> {
        None
    }
}

/// Why a read meant for a replica went to the primary (`parallax_storage_replica_fallbacks_total{reason}`).
pub const FALLBACK_REASONS: &[&str] = &["unavailable", "own_write", "error"];

/// A snapshot of the read router (PostgreSQL with replicas), read at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingMetrics {
    /// The primary first, then each replica in configuration order.
    pub hosts: Vec<HostMetrics>,
    /// Counts by [`FALLBACK_REASONS`], in that order: `unavailable` (no replica up and within
    /// `maxReplicaLag`), `own_write` (replicas up, but none has replayed this storage object's last write yet),
    /// `error` (the read failed on a replica and was retried on the primary).
    pub fallbacks: [u64; 3],
}

/// One host of [`RoutingMetrics`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostMetrics {
    /// `host:port` (never a user or password).
    pub host: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// Plain reads this host served (`parallax_storage_reads_total{host,role}`).
    pub reads: u64,
    /// Replicas only: reachable, a standby, and not lagging beyond `maxReplicaLag`? (the primary: `None`)
    pub up: Option<bool>,
    /// Replicas only: the replay lag in seconds from the last health probe; `None` while unknown or down.
    pub lag_seconds: Option<f64>,
    /// Replicas only: `storage.postgresql.maxReplicaLag` in seconds.
    pub max_lag_seconds: Option<f64>,
}

/// The text of the `metrics` op: renders `source`'s registry with its pool state and disk space read now, and
/// the cached table stats. `InvalidInput` naming `storage.metrics.enabled` when metrics are off.
pub async fn render<S: Source + crate::retention::Store>(source: &S) -> Result<String> {
    render::render(source).await
}

/// The background refresher of one storage object: table stats (and the retention run history) every
/// `statsInterval`, and the registry's upkeep (draining latency samples). Spawned by the adapter next to the
/// retention scheduler, aborted at shutdown; holds only a weak reference so it never keeps a backend alive.
pub fn spawn_refresher<S: Source + crate::retention::Store>(
    handle: &tokio::runtime::Handle,
    backend: std::sync::Weak<S>,
) -> Option<tokio::task::JoinHandle<()>> {
    refresh::spawn(handle, backend)
}
