use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use parallax_storage_abi::{retention::TableReport, ErrorKind};

use super::*;
use crate::{
    config::{CronSchedule, MetricsConfig, RetentionConfig, RetentionRule, StorageConfig},
    error::Error,
    retention::{Plan, Run, RunStatus, RunnerLock, Tally, Trigger},
    rules::{Key, Selection},
};

/// A backend as the metrics see it: a pool, tables, a disk and recorded runs, all set by the test.
struct Fake {
    metrics: Metrics,
    config: StorageConfig,
    pool: PoolState,
    disk: Option<u64>,
    /// What `routing()` reports (PostgreSQL with replicas); `None` like a backend without replicas.
    routing: Option<RoutingMetrics>,
    tables: Mutex<Vec<TableStat>>,
    runs: Mutex<Vec<Run>>,
    /// `table_stats` and `runs` fail while set.
    failing: AtomicBool,
    /// `table_stats` sleeps this long (milliseconds) first.
    stats_delay_ms: AtomicU64,
    refreshes: AtomicU64,
}

impl Fake {
    fn new(cfg: MetricsConfig) -> Fake {
        Fake::with(cfg, RetentionConfig::default())
    }

    /// A fake whose first scrape does not wait (no refresher runs unless the test spawns one).
    fn with(cfg: MetricsConfig, retention: RetentionConfig) -> Fake {
        let fake = Fake::waiting(cfg, retention);
        if let Some(m) = fake.metrics.inner() {
            m.refreshed.send_replace(true);
        }
        fake
    }

    /// A fake whose first scrape waits for a refresh.
    fn waiting(cfg: MetricsConfig, retention: RetentionConfig) -> Fake {
        Fake {
            metrics: Metrics::new(&cfg, "sqlite"),
            config: StorageConfig { metrics: cfg, retention, ..StorageConfig::default() },
            pool: PoolState { active: 2, idle: 3, waiting: 1 },
            disk: Some(123_456_789),
            routing: None,
            tables: Mutex::new(vec![
                TableStat { table: "patterns", rows: 4, size_bytes: 8192 },
                TableStat { table: "executions", rows: 10, size_bytes: 16_384 },
                // A second partition of the same table: summed.
                TableStat { table: "executions", rows: 5, size_bytes: 8192 },
                TableStat { table: "execution_events", rows: 40, size_bytes: 32_768 },
                TableStat { table: "audit_logs", rows: 7, size_bytes: 4096 },
            ]),
            runs: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            stats_delay_ms: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
        }
    }

    fn check(&self) -> crate::error::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(Error::unavailable("the database is down"))
        } else {
            Ok(())
        }
    }

    async fn refresh(&self) {
        refresh::refresh(self, self.metrics.inner().unwrap(), &mut false).await;
    }
}

impl Source for Fake {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn pool_state(&self) -> PoolState {
        self.pool
    }

    async fn table_stats(&self) -> crate::error::Result<Vec<TableStat>> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.stats_delay_ms.load(Ordering::SeqCst))).await;
        self.check()?;
        Ok(self.tables.lock().unwrap().clone())
    }

    fn disk_free_bytes(&self) -> Option<u64> {
        self.disk
    }

    fn routing(&self) -> Option<RoutingMetrics> {
        self.routing.clone()
    }
}

fn unused() -> Error {
    Error::internal("not used by the metrics")
}

impl crate::audit_chain::Store for Fake {}

impl crate::retention::Store for Fake {
    fn storage_config(&self) -> &StorageConfig {
        &self.config
    }
    async fn nth_newest_execution(&self, _: u64) -> crate::error::Result<Option<Key>> {
        Err(unused())
    }
    async fn plan_cleanup(&self, _: Selection) -> crate::error::Result<Plan> {
        Err(unused())
    }
    async fn cleanup(&self, _: Selection, _: Tally) -> crate::error::Result<Vec<TableReport>> {
        Err(unused())
    }
    async fn lock_runner(&self) -> crate::error::Result<Option<RunnerLock>> {
        Err(unused())
    }
    async fn save_run(&self, _: Run) -> crate::error::Result<()> {
        Err(unused())
    }
    async fn runs(&self, limit: usize) -> crate::error::Result<Vec<Run>> {
        self.check()?;
        Ok(self.runs.lock().unwrap().iter().take(limit).cloned().collect())
    }
    async fn last_tick(&self) -> crate::error::Result<Option<i64>> {
        Err(unused())
    }
}

fn run(status: RunStatus, finished_at: Option<i64>) -> Run {
    Run { status, finished_at, ..Run::start(Trigger::Manual, None) }
}

/// One sample line: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The exposition read back: `# TYPE` per family, `# HELP` names, samples.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').unwrap();
                assert!(e.types.insert(name.into(), ty.into()).is_none(), "two TYPE lines for {name}");
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.trim().is_empty(), "empty HELP for {name}");
                assert!(e.helps.insert(name.into()), "two HELP lines for {name}");
            } else {
                assert!(!line.starts_with('#'), "{line}");
                e.samples.push(sample(line));
            }
        }
        e
    }

    /// The label names of every sample of `name`.
    fn label_names(&self, name: &str) -> BTreeSet<Vec<String>> {
        self.of(name).map(|s| s.labels.keys().cloned().collect()).collect()
    }

    fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.of(name).find(|s| s.labels == want).map(|s| s.value)
    }
}

fn sample(line: &str) -> Sample {
    let (head, value) = line.rsplit_once(' ').unwrap();
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    let Some((name, rest)) = head.split_once('{') else {
        return Sample { name: head.into(), labels: BTreeMap::new(), value };
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest.strip_suffix('}').unwrap();
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").unwrap();
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().unwrap();
            match c {
                '\\' => v.push(chars.next().unwrap().1),
                '"' => break i,
                c => v.push(c),
            }
        };
        assert!(labels.insert(k.to_string(), v).is_none(), "label {k} twice in {line}");
        rest = after[end + 1..].trim_start_matches(',');
    }
    Sample { name: name.into(), labels, value }
}

fn names(v: &[&str]) -> BTreeSet<Vec<String>> {
    BTreeSet::from([v.iter().map(|s| s.to_string()).collect::<Vec<_>>()])
}

/// promtool as the CI finds it: `PROMTOOL`, else the workspace's unpacked Debian package, else `PATH`.
fn promtool() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return p.into();
    }
    let unpacked =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/prometheus-pkg/usr/bin/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("promtool")).find(|p| p.exists()))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "promtool not found (PROMTOOL, target/prometheus-pkg/usr/bin/promtool, PATH); install it from the \
             workspace root with: (cd target && apt-get download prometheus && dpkg -x prometheus_*.deb \
             prometheus-pkg)"
        )
    })
}

fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n--- text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workload through every data call and a few failures.
fn workload(m: &Metrics) {
    for (call, labels) in calls::CALLS {
        if labels.is_some() {
            m.observe(call, Duration::from_millis(2), None);
        }
    }
    m.observe("create_execution", Duration::from_millis(30), None);
    m.observe("update_execution", Duration::from_millis(40), None);
    m.observe("get_execution", Duration::from_millis(1), Some(ErrorKind::NotFound));
    m.observe("get_execution", Duration::from_millis(1), Some(ErrorKind::NotFound));
    m.observe("append_event", Duration::from_millis(1), Some(ErrorKind::Timeout));
    m.observe("migrate_up", Duration::from_millis(1), Some(ErrorKind::Unavailable));
    m.observe("ping", Duration::from_millis(1), Some(ErrorKind::from_raw(77)));
    m.observe("health", Duration::from_millis(1), None);
    m.pool_acquire_timed_out();
    m.pool_acquire_timed_out();
    m.archive_written(4096);
    m.retention_finished(
        true,
        1_700_000_000_500_000,
        &BTreeMap::from([("executions".into(), 3), ("execution_events".into(), 9)]),
    );
}

const DOCUMENTED: &[(&str, &str, &[&str])] = &[
    ("parallax_storage_errors_total", "counter", &["kind", "operation", "table"]),
    ("parallax_storage_pool_connections_active", "gauge", &[]),
    ("parallax_storage_pool_connections_idle", "gauge", &[]),
    ("parallax_storage_pool_waiting_requests", "gauge", &[]),
    ("parallax_storage_pool_acquire_timeouts_total", "counter", &[]),
    ("parallax_storage_table_rows", "gauge", &["table"]),
    ("parallax_storage_table_size_bytes", "gauge", &["table"]),
    ("parallax_storage_disk_free_bytes", "gauge", &[]),
    ("parallax_storage_retention_last_success_timestamp_seconds", "gauge", &[]),
    ("parallax_storage_retention_last_failure_timestamp_seconds", "gauge", &[]),
    ("parallax_storage_retention_rows_removed_total", "counter", &["table"]),
    ("parallax_storage_archive_bytes_total", "counter", &[]),
    ("parallax_storage_build_info", "gauge", &["abi_version", "backend", "plugin_version"]),
];

#[tokio::test]
async fn every_documented_metric_has_exactly_its_labels() {
    let fake = Fake::new(MetricsConfig::default());
    fake.runs.lock().unwrap().extend([
        run(RunStatus::Running, None),
        run(RunStatus::Failed, Some(1_700_000_100_000_000)),
        run(RunStatus::Succeeded, Some(1_600_000_000_000_000)),
    ]);
    workload(&fake.metrics);
    fake.refresh().await;
    let text = render(&fake).await.unwrap();
    let e = Exposition::parse(&text);

    for (name, ty, labels) in DOCUMENTED {
        assert_eq!(e.types.get(*name).map(String::as_str), Some(*ty), "{name}\n{text}");
        assert!(e.helps.contains(*name), "no HELP for {name}");
        assert_eq!(e.label_names(name), names(labels), "{name}");
    }
    let d = "parallax_storage_operation_duration_seconds";
    assert_eq!(e.types[d], "summary");
    assert!(e.helps.contains(d));
    assert_eq!(e.label_names(d), names(&["operation", "quantile", "table"]));
    assert_eq!(e.label_names(&format!("{d}_sum")), names(&["operation", "table"]));
    assert_eq!(e.label_names(&format!("{d}_count")), names(&["operation", "table"]));
    // Every (operation, table) of the mapping, with every configured quantile; nothing else.
    let pairs: BTreeSet<(&str, &str)> = calls::CALLS.iter().filter_map(|(_, l)| *l).collect();
    assert_eq!(pairs.len(), 14);
    for (op, table) in &pairs {
        for q in ["0.5", "0.9", "0.95", "0.99"] {
            let v = e.value(d, &[("operation", op), ("table", table), ("quantile", q)]);
            assert!(v.is_some_and(|v| v > 0.0), "{op} {table} {q}: {v:?}");
        }
    }
    assert_eq!(e.of(d).count(), pairs.len() * 4, "{text}");
    let write = [("operation", "write"), ("table", "executions")];
    // put through create, update and complete_execution once each, plus one more create and update.
    assert_eq!(e.value(&format!("{d}_count"), &write), Some(5.0));
    let sum = e.value(&format!("{d}_sum"), &write).unwrap();
    assert!((sum - 0.076).abs() < 1e-9, "{sum}");
    assert!(text.contains("quantile=\"0.99\""), "{text}");

    let errors = "parallax_storage_errors_total";
    assert_eq!(
        e.value(errors, &[("operation", "read"), ("table", "executions"), ("kind", "not_found")]),
        Some(2.0)
    );
    assert_eq!(
        e.value(errors, &[("operation", "write"), ("table", "execution_events"), ("kind", "timeout")]),
        Some(1.0)
    );
    assert_eq!(
        e.value(errors, &[("operation", "migrate_up"), ("table", ""), ("kind", "unavailable")]),
        Some(1.0)
    );
    assert_eq!(e.value(errors, &[("operation", "ping"), ("table", ""), ("kind", "unknown")]), Some(1.0));
    assert_eq!(e.of(errors).count(), 4, "only kinds that happened");

    assert_eq!(e.value("parallax_storage_pool_connections_active", &[]), Some(2.0));
    assert_eq!(e.value("parallax_storage_pool_connections_idle", &[]), Some(3.0));
    assert_eq!(e.value("parallax_storage_pool_waiting_requests", &[]), Some(1.0));
    assert_eq!(e.value("parallax_storage_pool_acquire_timeouts_total", &[]), Some(2.0));
    assert_eq!(e.value("parallax_storage_disk_free_bytes", &[]), Some(123_456_789.0));
    let rows: Vec<(String, f64)> =
        e.of("parallax_storage_table_rows").map(|s| (s.labels["table"].clone(), s.value)).collect();
    let expected = [("patterns", 4.0), ("executions", 15.0), ("execution_events", 40.0), ("audit_logs", 7.0)];
    assert_eq!(rows, expected.map(|(t, n)| (t.to_string(), n)));
    assert_eq!(e.value("parallax_storage_table_size_bytes", &[("table", "executions")]), Some(24_576.0));
    // The hook's success (2023) is newer than the history's (2020); the history's failure is the only one.
    assert_eq!(
        e.value("parallax_storage_retention_last_success_timestamp_seconds", &[]),
        Some(1_700_000_000.5)
    );
    assert_eq!(
        e.value("parallax_storage_retention_last_failure_timestamp_seconds", &[]),
        Some(1_700_000_100.0)
    );
    assert_eq!(
        e.value("parallax_storage_retention_rows_removed_total", &[("table", "executions")]),
        Some(3.0)
    );
    assert_eq!(
        e.value("parallax_storage_retention_rows_removed_total", &[("table", "execution_events")]),
        Some(9.0)
    );
    assert_eq!(e.value("parallax_storage_archive_bytes_total", &[]), Some(4096.0));
    assert_eq!(
        e.value(
            "parallax_storage_build_info",
            &[
                ("plugin_version", crate::PLUGIN_VERSION),
                ("abi_version", parallax_storage_abi::ABI_VERSION),
                ("backend", "sqlite")
            ]
        ),
        Some(1.0)
    );
    assert!(!e.types.contains_key("parallax_storage_retention_schedule_interval_seconds"), "no schedule");
    assert!(text.ends_with('\n'));
    promtool_check(&text);
}

#[tokio::test]
async fn a_fresh_registry_renders_zeroes_and_leaves_out_what_it_does_not_know() {
    let mut fake = Fake::new(MetricsConfig::default());
    fake.disk = None;
    fake.failing.store(true, Ordering::SeqCst);
    fake.refresh().await;
    let text = render(&fake).await.unwrap();
    let e = Exposition::parse(&text);
    for absent in [
        "parallax_storage_disk_free_bytes",
        "parallax_storage_table_rows",
        "parallax_storage_table_size_bytes",
        "parallax_storage_retention_last_success_timestamp_seconds",
        "parallax_storage_retention_last_failure_timestamp_seconds",
        "parallax_storage_retention_rows_removed_total",
        "parallax_storage_errors_total",
    ] {
        assert!(!e.types.contains_key(absent) && e.of(absent).next().is_none(), "{absent}\n{text}");
    }
    assert_eq!(e.value("parallax_storage_pool_acquire_timeouts_total", &[]), Some(0.0));
    assert_eq!(e.value("parallax_storage_archive_bytes_total", &[]), Some(0.0));
    let d = "parallax_storage_operation_duration_seconds_count";
    assert_eq!(e.value(d, &[("operation", "read"), ("table", "patterns")]), Some(0.0));
    promtool_check(&text);
}

#[tokio::test]
async fn latency_buckets_make_a_histogram() {
    let cfg = MetricsConfig { latency_buckets: Some(vec![0.01, 0.1, 1.0]), ..MetricsConfig::default() };
    let fake = Fake::new(cfg);
    fake.metrics.observe("create_execution", Duration::from_millis(50), None);
    fake.metrics.observe("create_execution", Duration::from_millis(5), None);
    fake.metrics.observe("create_execution", Duration::from_secs(3), None);
    let text = render(&fake).await.unwrap();
    let e = Exposition::parse(&text);
    let d = "parallax_storage_operation_duration_seconds";
    assert_eq!(e.types[d], "histogram");
    assert_eq!(e.label_names(&format!("{d}_bucket")), names(&["le", "operation", "table"]));
    assert!(e.of(d).next().is_none() && !text.contains("quantile="), "{text}");
    let bucket = |le: &str| {
        e.value(&format!("{d}_bucket"), &[("operation", "write"), ("table", "executions"), ("le", le)])
    };
    assert_eq!(
        (bucket("0.01"), bucket("0.1"), bucket("1"), bucket("+Inf")),
        (Some(1.0), Some(2.0), Some(2.0), Some(3.0))
    );
    assert_eq!(e.value(&format!("{d}_count"), &[("operation", "write"), ("table", "executions")]), Some(3.0));
    promtool_check(&text);
}

#[tokio::test]
async fn configured_quantiles_are_the_ones_rendered() {
    let fake = Fake::new(MetricsConfig { quantiles: vec![0.5, 0.999], ..MetricsConfig::default() });
    for ms in 1..=100 {
        fake.metrics.observe("list_executions", Duration::from_millis(ms), None);
    }
    let e = Exposition::parse(&render(&fake).await.unwrap());
    let d = "parallax_storage_operation_duration_seconds";
    let labels = |q| [("operation", "list"), ("table", "executions"), ("quantile", q)];
    let median = e.value(d, &labels("0.5")).unwrap();
    let top = e.value(d, &labels("0.999")).unwrap();
    assert!((0.0485..0.0515).contains(&median), "{median}");
    assert!((0.097..0.103).contains(&top), "{top}");
    assert_eq!(e.value(d, &labels("0.99")), None);
}

#[tokio::test]
async fn disabled_metrics_record_nothing_and_the_op_names_the_key() {
    let fake = Fake::new(MetricsConfig { enabled: false, ..MetricsConfig::default() });
    assert!(fake.metrics.inner().is_none());
    workload(&fake.metrics);
    let e = render(&fake).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.0.message.contains("storage.metrics.enabled"), "{e}");
    let rt = tokio::runtime::Handle::current();
    let fake = Arc::new(fake);
    assert!(spawn_refresher(&rt, Arc::downgrade(&fake)).is_none());
}

#[tokio::test]
async fn the_first_scrape_waits_for_the_first_refresh_and_the_refresher_ends_with_its_backend() {
    let cfg = MetricsConfig { stats_interval_ms: 50, ..MetricsConfig::default() };
    let fake = Arc::new(Fake::waiting(cfg, RetentionConfig::default()));
    fake.stats_delay_ms.store(300, Ordering::SeqCst);
    let task = spawn_refresher(&tokio::runtime::Handle::current(), Arc::downgrade(&fake)).unwrap();
    let e = Exposition::parse(&render(&*fake).await.unwrap());
    assert_eq!(e.value("parallax_storage_table_rows", &[("table", "patterns")]), Some(4.0));
    // Later values arrive with later refreshes; a later scrape does not wait for one.
    fake.tables.lock().unwrap()[0].rows = 99;
    let started = std::time::Instant::now();
    render(&*fake).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = Exposition::parse(&render(&*fake).await.unwrap());
            if e.value("parallax_storage_table_rows", &[("table", "patterns")]) == Some(99.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a later refresh picks up the new row count");
    drop(fake);
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("the refresher ends").unwrap();
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_old_values() {
    let fake = Fake::new(MetricsConfig::default());
    fake.runs.lock().unwrap().push(run(RunStatus::Succeeded, Some(1_600_000_000_000_000)));
    fake.refresh().await;
    fake.failing.store(true, Ordering::SeqCst);
    fake.tables.lock().unwrap()[0].rows = 1000;
    fake.refresh().await;
    fake.refresh().await;
    let e = Exposition::parse(&render(&fake).await.unwrap());
    assert_eq!(e.value("parallax_storage_table_rows", &[("table", "patterns")]), Some(4.0));
    assert_eq!(
        e.value("parallax_storage_retention_last_success_timestamp_seconds", &[]),
        Some(1_600_000_000.0)
    );
    fake.failing.store(false, Ordering::SeqCst);
    fake.refresh().await;
    let e = Exposition::parse(&render(&fake).await.unwrap());
    assert_eq!(e.value("parallax_storage_table_rows", &[("table", "patterns")]), Some(1000.0));
    // A backend that reports no table: no empty families.
    fake.tables.lock().unwrap().clear();
    fake.refresh().await;
    let text = render(&fake).await.unwrap();
    assert!(!text.contains("parallax_storage_table_"), "{text}");
}

#[tokio::test]
async fn the_schedule_interval_is_exported_where_this_instance_runs_the_schedule() {
    let rule =
        Some(RetentionRule { enabled: true, max_age: Some(Duration::from_secs(86_400)), max_count: None });
    let retention = |schedule: &str, run_schedule: bool| RetentionConfig {
        executions: rule.clone(),
        cleanup_schedule: Some(CronSchedule::parse(schedule).unwrap()),
        run_schedule,
        ..RetentionConfig::default()
    };
    let name = "parallax_storage_retention_schedule_interval_seconds";
    for (schedule, interval) in [("0 2 * * *", 86_400.0), ("*/15 * * * *", 900.0)] {
        let fake = Fake::with(MetricsConfig::default(), retention(schedule, true));
        let text = render(&fake).await.unwrap();
        assert_eq!(Exposition::parse(&text).value(name, &[]), Some(interval), "{schedule}");
        promtool_check(&text);
        let fake = Fake::with(MetricsConfig::default(), retention(schedule, false));
        assert_eq!(Exposition::parse(&render(&fake).await.unwrap()).value(name, &[]), None);
    }
    // A schedule without an enabled rule runs nothing: no interval to be overdue against.
    let mut r = retention("0 2 * * *", true);
    r.executions = None;
    let fake = Fake::with(MetricsConfig::default(), r);
    assert_eq!(Exposition::parse(&render(&fake).await.unwrap()).value(name, &[]), None);
}

#[test]
fn retention_hooks_keep_the_newest_times() {
    let m = Metrics::default();
    m.retention_finished(false, 300, &BTreeMap::new());
    m.retention_finished(true, 200, &BTreeMap::from([("executions".into(), 2), ("search".into(), 5)]));
    m.retention_finished(true, 100, &BTreeMap::from([("executions".into(), 1)]));
    let c = m.inner().unwrap().cache.lock().unwrap().clone();
    assert_eq!((c.last_success, c.last_failure), (Some(200), Some(300)));
    let text = m.inner().unwrap().handle.render();
    assert!(text.contains("parallax_storage_retention_rows_removed_total{table=\"executions\"} 3"), "{text}");
    assert!(!text.contains("table=\"search\""), "only the documented tables: {text}");
}

const ROUTING: &[(&str, &str, &[&str])] = &[
    ("parallax_storage_reads_total", "counter", &["host", "role"]),
    ("parallax_storage_replica_fallbacks_total", "counter", &["reason"]),
    ("parallax_storage_replica_up", "gauge", &["host"]),
    ("parallax_storage_replica_lag_seconds", "gauge", &["host"]),
    ("parallax_storage_replica_max_lag_seconds", "gauge", &["host"]),
];

fn host(
    host: &str,
    role: &'static str,
    reads: u64,
    up: Option<bool>,
    lag_seconds: Option<f64>,
) -> HostMetrics {
    let max_lag_seconds = (role == "replica").then_some(10.0);
    HostMetrics { host: host.into(), role, reads, up, lag_seconds, max_lag_seconds }
}

/// A primary and three replicas: one up and caught up to 0.25 s, one lagging (up 0, lag known), one down
/// (never reached: no lag).
fn routed() -> RoutingMetrics {
    RoutingMetrics {
        hosts: vec![
            host("db-primary:5432", "primary", 40, None, None),
            host("db-replica-1:5432", "replica", 120, Some(true), Some(0.25)),
            host("db-replica-2:5433", "replica", 7, Some(false), Some(42.5)),
            host("[::1]:5434", "replica", 0, Some(false), None),
        ],
        fallbacks: [3, 5, 1],
    }
}

#[tokio::test]
async fn replica_routing_renders_reads_fallbacks_state_and_lag_per_host() {
    let mut fake = Fake::new(MetricsConfig::default());
    fake.routing = Some(routed());
    fake.runs.lock().unwrap().push(run(RunStatus::Failed, Some(1_700_000_100_000_000)));
    workload(&fake.metrics);
    fake.refresh().await;
    let text = render(&fake).await.unwrap();
    let e = Exposition::parse(&text);
    for (name, ty, labels) in ROUTING {
        assert_eq!(e.types.get(*name).map(String::as_str), Some(*ty), "{name}\n{text}");
        assert!(e.helps.contains(*name), "no HELP for {name}");
        assert_eq!(e.label_names(name), names(labels), "{name}");
    }
    // The other families are unchanged by routing.
    for (name, ty, _) in DOCUMENTED {
        assert_eq!(e.types.get(*name).map(String::as_str), Some(*ty), "{name}");
    }

    let reads = "parallax_storage_reads_total";
    let by_host: Vec<(String, String, f64)> =
        e.of(reads).map(|s| (s.labels["host"].clone(), s.labels["role"].clone(), s.value)).collect();
    let expected = [
        ("db-primary:5432", "primary", 40.0),
        ("db-replica-1:5432", "replica", 120.0),
        ("db-replica-2:5433", "replica", 7.0),
        ("[::1]:5434", "replica", 0.0),
    ];
    assert_eq!(by_host, expected.map(|(h, r, n)| (h.to_string(), r.to_string(), n)));

    // Every reason, in order, zero or not.
    let fallbacks: Vec<(String, f64)> = e
        .of("parallax_storage_replica_fallbacks_total")
        .map(|s| (s.labels["reason"].clone(), s.value))
        .collect();
    assert_eq!(
        fallbacks,
        [("unavailable", 3.0), ("own_write", 5.0), ("error", 1.0)].map(|(r, n)| (r.to_string(), n))
    );

    // Replicas only: the primary has no up, lag or max-lag series.
    let up = |h: &str| e.value("parallax_storage_replica_up", &[("host", h)]);
    assert_eq!(
        (up("db-replica-1:5432"), up("db-replica-2:5433"), up("[::1]:5434"), up("db-primary:5432")),
        (Some(1.0), Some(0.0), Some(0.0), None)
    );
    let lag = |h: &str| e.value("parallax_storage_replica_lag_seconds", &[("host", h)]);
    assert_eq!(
        (lag("db-replica-1:5432"), lag("db-replica-2:5433"), lag("[::1]:5434"), lag("db-primary:5432")),
        (Some(0.25), Some(42.5), None, None),
        "the lag of a replica never reached is absent, not 0"
    );
    let max = "parallax_storage_replica_max_lag_seconds";
    assert_eq!(e.of(max).count(), 3, "{text}");
    assert!(e.of(max).all(|s| s.value == 10.0 && s.labels["host"] != "db-primary:5432"), "{text}");
    promtool_check(&text);
}

#[tokio::test]
async fn without_replicas_no_routing_family_is_rendered() {
    let fake = Fake::new(MetricsConfig::default());
    workload(&fake.metrics);
    let text = render(&fake).await.unwrap();
    for (name, _, _) in ROUTING {
        assert!(!text.contains(name), "{name}\n{text}");
    }
    assert!(!text.contains("host=\""), "{text}");
    promtool_check(&text);
}

#[tokio::test]
async fn routing_families_with_nothing_to_show_are_left_out_and_the_text_stays_valid() {
    // Replicas configured but none probed yet: up 0, no lag family at all (no header without a sample).
    let mut fake = Fake::new(MetricsConfig::default());
    fake.routing = Some(RoutingMetrics {
        hosts: vec![
            host("p:5432", "primary", 0, None, None),
            host("r:5432", "replica", 0, Some(false), None),
        ],
        fallbacks: [0, 0, 0],
    });
    let text = render(&fake).await.unwrap();
    let e = Exposition::parse(&text);
    assert!(!e.types.contains_key("parallax_storage_replica_lag_seconds"), "{text}");
    assert!(!e.helps.contains("parallax_storage_replica_lag_seconds"), "{text}");
    assert_eq!(e.value("parallax_storage_replica_up", &[("host", "r:5432")]), Some(0.0));
    assert_eq!(e.of("parallax_storage_replica_fallbacks_total").count(), 3);
    assert!(e.of("parallax_storage_replica_fallbacks_total").all(|s| s.value == 0.0));
    promtool_check(&text);

    // The same address configured twice is one series (reads summed), so the text never repeats a series;
    // label values are escaped; a lag too large to be finite is spelled as Prometheus spells it.
    let odd = "we\\ird\"host:5432";
    fake.routing = Some(RoutingMetrics {
        hosts: vec![
            host("p:5432", "primary", 1, None, None),
            host(odd, "replica", 2, Some(false), Some(f64::INFINITY)),
            host(odd, "replica", 3, Some(false), Some(1.0)),
        ],
        fallbacks: [0, 0, 0],
    });
    let text = render(&fake).await.unwrap();
    let e = Exposition::parse(&text);
    assert_eq!(e.value("parallax_storage_reads_total", &[("host", odd), ("role", "replica")]), Some(5.0));
    assert_eq!(e.of("parallax_storage_replica_up").count(), 1, "{text}");
    assert_eq!(e.value("parallax_storage_replica_lag_seconds", &[("host", odd)]), Some(f64::INFINITY));
    assert!(text.contains(r#"host="we\\ird\"host:5432""#), "{text}");
    promtool_check(&text);

    // A replica nobody checks (readPreference primary: `up` unknown) has no `up` sample, so StorageReplicaDown
    // never fires for it.
    fake.routing = Some(RoutingMetrics {
        hosts: vec![host("p:5432", "primary", 1, None, None), host("r:5432", "replica", 0, None, None)],
        fallbacks: [0, 0, 0],
    });
    let text = render(&fake).await.unwrap();
    let e = Exposition::parse(&text);
    assert_eq!(e.of("parallax_storage_replica_up").count(), 0, "{text}");
    promtool_check(&text);

    // No hosts at all (a router reporting nothing yet): only the fallbacks, all three reasons.
    fake.routing = Some(RoutingMetrics::default());
    let text = render(&fake).await.unwrap();
    let e = Exposition::parse(&text);
    assert!(!e.types.contains_key("parallax_storage_reads_total"), "{text}");
    assert!(!e.types.contains_key("parallax_storage_replica_up"), "{text}");
    assert_eq!(e.of("parallax_storage_replica_fallbacks_total").count(), 3);
    promtool_check(&text);
}
