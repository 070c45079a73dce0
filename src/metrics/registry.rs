//! [`Metrics`]: one storage object's registry: the latency metric ([`super::latency`]) and a
//! metrics-exporter-prometheus recorder, never installed globally, for the counters.

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, Mutex, OnceLock},
    time::Duration,
};

use metrics::{Counter, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parallax_storage_abi::ErrorKind;

use super::{calls, latency::Latency, TableStat, TABLES};
use crate::config::MetricsConfig;

pub(super) const ERRORS: &str = "parallax_storage_errors_total";
pub(super) const ACQUIRE_TIMEOUTS: &str = "parallax_storage_pool_acquire_timeouts_total";
pub(super) const ROWS_REMOVED: &str = "parallax_storage_retention_rows_removed_total";
pub(super) const ARCHIVE_BYTES: &str = "parallax_storage_archive_bytes_total";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// One storage object's registry. Cheap to record into from any thread.
pub struct Metrics {
    /// `None` when `storage.metrics.enabled` is false: every method is then a no-op.
    inner: Option<Box<Inner>>,
}

pub(super) struct Inner {
    recorder: PrometheusRecorder,
    pub(super) handle: PrometheusHandle,
    pub(super) backend: &'static str,
    pub(super) stats_interval: Duration,
    /// `parallax_storage_operation_duration_seconds`.
    pub(super) latency: Latency,
    /// By `call index × KINDS + kind index`, registered at a call's first error of that kind.
    errors: Vec<OnceLock<Counter>>,
    acquire_timeouts: Counter,
    archive_bytes: Counter,
    /// By [`TABLES`] index, registered at the first removal from that table.
    rows_removed: Vec<OnceLock<Counter>>,
    /// What the refresher (and the retention hooks) found; read by a scrape.
    pub(super) cache: Mutex<Cache>,
    /// Set (true) once the first refresh is done, successful or not; the first scrape waits for it.
    pub(super) refreshed: tokio::sync::watch::Sender<bool>,
    /// Whether a scrape has already waited for the first refresh (only the first one waits).
    pub(super) first_scrape_done: AtomicBool,
    /// Set (true) by the first scrape: until then the refresher queries nothing, so a storage object nobody
    /// scrapes (a CLI command, a benchmark, a control plane without monitoring) costs no catalog query and
    /// logs nothing about tables it does not have yet.
    pub(super) wanted: tokio::sync::watch::Sender<bool>,
}

/// Values kept between refreshes. Times are microseconds since the epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Cache {
    /// `None` until the first successful refresh: the table gauges are left out until then.
    pub tables: Option<Vec<TableStat>>,
    pub last_success: Option<i64>,
    pub last_failure: Option<i64>,
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(name, labels.iter().map(|(k, v)| Label::from_static_parts(k, v)).collect::<Vec<_>>())
}

fn describe(recorder: &PrometheusRecorder) {
    let d = |name: &'static str, help: &'static str| {
        (KeyName::from_const_str(name), SharedString::const_str(help))
    };
    let (n, h) = d(
        ERRORS,
        "Failed storage calls by operation, table and error kind (not_found, conflict and invalid_input are \
         client mistakes); calls that are not data operations carry their call name and table=\"\".",
    );
    recorder.describe_counter(n, Some(Unit::Count), h);
    let (n, h) = d(
        ACQUIRE_TIMEOUTS,
        "Waits for a connection that gave up: PostgreSQL after pool.acquireTimeout, SQLite a read that got no read connection in time.",
    );
    recorder.describe_counter(n, Some(Unit::Count), h);
    let (n, h) = d(
        ROWS_REMOVED,
        "Rows removed by cleanup, archive and retention runs of this storage instance, by table.",
    );
    recorder.describe_counter(n, Some(Unit::Count), h);
    let (n, h) = d(
        ARCHIVE_BYTES,
        "Compressed bytes that archive runs of this storage instance stored at their destination.",
    );
    recorder.describe_counter(n, Some(Unit::Bytes), h);
}

impl Metrics {
    /// A registry for `backend` (`"postgresql"`, `"sqlite"`, `"file"`) shaped by `storage.metrics`.
    pub fn new(cfg: &MetricsConfig, backend: &'static str) -> Metrics {
        if !cfg.enabled {
            return Metrics { inner: None };
        }
        let recorder = PrometheusBuilder::new().build_recorder();
        describe(&recorder);
        let acquire_timeouts = recorder.register_counter(&Key::from_static_name(ACQUIRE_TIMEOUTS), &METADATA);
        let archive_bytes = recorder.register_counter(&Key::from_static_name(ARCHIVE_BYTES), &METADATA);
        let inner = Inner {
            handle: recorder.handle(),
            recorder,
            backend,
            stats_interval: Duration::from_millis(cfg.stats_interval_ms.max(1)),
            latency: Latency::new(cfg),
            errors: (0..calls::CALLS.len() * calls::KINDS.len()).map(|_| OnceLock::new()).collect(),
            acquire_timeouts,
            archive_bytes,
            rows_removed: TABLES.iter().map(|_| OnceLock::new()).collect(),
            cache: Mutex::new(Cache::default()),
            refreshed: tokio::sync::watch::Sender::new(false),
            first_scrape_done: AtomicBool::new(false),
            wanted: tokio::sync::watch::Sender::new(false),
        };
        Metrics { inner: Some(Box::new(inner)) }
    }

    pub(super) fn inner(&self) -> Option<&Inner> {
        self.inner.as_deref()
    }

    /// Records one finished ABI call: `call` is the adapter's call name, `error` its error kind if it failed.
    /// A no-op when disabled; on success a `match` on the name and three relaxed atomic adds (no lock, no
    /// allocation, no hashing).
    pub fn observe(&self, call: &'static str, elapsed: Duration, error: Option<ErrorKind>) {
        let Some(m) = &self.inner else { return };
        let index = calls::index(call);
        if let Some(i) = index {
            m.latency.record(i, elapsed);
        }
        if let Some(kind) = error {
            m.error(call, index, kind);
        }
    }

    /// One `pool.get()` (or writer hand-off) gave up after `acquireTimeout`.
    pub fn pool_acquire_timed_out(&self) {
        if let Some(m) = &self.inner {
            m.acquire_timeouts.increment(1);
        }
    }

    /// A cleanup or retention run finished (`finished_at`: microseconds since the epoch; `rows`: rows removed per
    /// table). Dry runs are not recorded.
    pub fn retention_finished(&self, success: bool, finished_at: i64, rows: &BTreeMap<String, u64>) {
        let Some(m) = &self.inner else { return };
        for (table, n) in rows {
            if let Some(i) = TABLES.iter().position(|t| t == table) {
                m.rows_removed[i]
                    .get_or_init(|| {
                        m.recorder.register_counter(&key(ROWS_REMOVED, &[("table", TABLES[i])]), &METADATA)
                    })
                    .increment(*n);
            }
        }
        let mut c = m.cache.lock().unwrap_or_else(|p| p.into_inner());
        let slot = if success { &mut c.last_success } else { &mut c.last_failure };
        *slot = Some(slot.map_or(finished_at, |t| t.max(finished_at)));
    }

    /// An archive run stored `bytes` compressed bytes at its destination.
    pub fn archive_written(&self, bytes: u64) {
        if let Some(m) = &self.inner {
            m.archive_bytes.increment(bytes);
        }
    }
}

#[cfg(test)]
impl Metrics {
    /// The counters as rendered (tests of the code that records into them).
    pub(crate) fn rendered_counters(&self) -> String {
        self.inner.as_ref().map_or_else(String::new, |m| m.handle.render())
    }

    /// The last success and failure times the retention hooks (and refreshes) left.
    pub(crate) fn retention_times(&self) -> (Option<i64>, Option<i64>) {
        self.inner.as_ref().map_or((None, None), |m| {
            let c = m.cache.lock().unwrap_or_else(|p| p.into_inner());
            (c.last_success, c.last_failure)
        })
    }
}

#[cfg(test)]
impl Default for Metrics {
    /// An enabled registry with the default configuration (for test fakes).
    fn default() -> Metrics {
        Metrics::new(&MetricsConfig::default(), "test")
    }
}

impl Inner {
    /// The error path: registers the counter at its first use (hashing and allocating only then).
    #[cold]
    fn error(&self, call: &'static str, index: Option<usize>, kind: ErrorKind) {
        let k = calls::kind_index(kind);
        let register = || {
            let (op, table) = calls::error_labels(call);
            self.recorder.register_counter(
                &key(ERRORS, &[("operation", op), ("table", table), ("kind", calls::KINDS[k])]),
                &METADATA,
            )
        };
        match index {
            Some(i) => self.errors[i * calls::KINDS.len() + k].get_or_init(register).increment(1),
            // A call this table does not list (the unit tests keep it from happening): the registry finds it.
            None => register().increment(1),
        }
    }

    /// Keeps the summary's window moving when nobody scrapes, and lets the recorder publish its descriptions.
    pub(super) fn upkeep(&self) {
        self.latency.upkeep(std::time::Instant::now());
        self.handle.run_upkeep();
    }
}
