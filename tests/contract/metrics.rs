//! The `metrics` op (issue 14) on every backend, through the loaded cdylib: the exposition names every
//! documented metric with exactly its labels, the values move with the calls (one write is one more write for
//! `executions`), a missing row counts as a `not_found` error, table statistics follow the data, a cleanup sets
//! its last-success time, `storage.metrics` shapes the output, and `promtool check metrics` accepts the text.
//! The pool's waiting requests under a held pool are backend-specific (tests/postgres.rs, tests/sqlite.rs).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use parallax_storage_host::{
    retention::{CleanupParams, CleanupTarget},
    *,
};
use serde_json::json;

use crate::common::{exposition::*, *};

const DURATION: &str = "parallax_storage_operation_duration_seconds";
const DURATION_COUNT: &str = "parallax_storage_operation_duration_seconds_count";
const ERRORS: &str = "parallax_storage_errors_total";
const TABLE_ROWS: &str = "parallax_storage_table_rows";
const TABLE_SIZE: &str = "parallax_storage_table_size_bytes";
const DISK_FREE: &str = "parallax_storage_disk_free_bytes";
const LAST_SUCCESS: &str = "parallax_storage_retention_last_success_timestamp_seconds";
const ROWS_REMOVED: &str = "parallax_storage_retention_rows_removed_total";
const POOL_GAUGES: [&str; 3] = [
    "parallax_storage_pool_connections_active",
    "parallax_storage_pool_connections_idle",
    "parallax_storage_pool_waiting_requests",
];
const DAY: i64 = 86_400_000_000;
/// An execution id no test creates.
const MISSING: &str = "0190b3f4-0000-7000-8000-00000000dead";

/// The exposition of `s` now, parsed (and checked to be the Prometheus text format's content type).
async fn scrape(s: &Storage) -> Exposition {
    let m = s.metrics().await.unwrap_or_else(|e| panic!("metrics: {e}"));
    assert_eq!(m.content_type, parallax_storage_host::metrics::PROMETHEUS_TEXT_CONTENT_TYPE);
    assert!(m.text.ends_with('\n'), "the exposition ends with a newline: {:?}", m.text);
    Exposition::parse(&m.text)
}

/// Every `…_count{operation,table}` of the latency summary (or histogram), by `(operation, table)`.
fn call_counts(e: &Exposition) -> BTreeMap<(String, String), f64> {
    e.find(DURATION_COUNT, &[])
        .into_iter()
        .map(|s| {
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_else(|| panic!("{k} missing on {s:?}"));
            assert_eq!(s.labels.len(), 2, "exactly operation and table: {s:?}");
            ((label("operation"), label("table")), s.value)
        })
        .collect()
}

/// One call of each data operation the contract knows, `times` of each (operation, table) as returned.
async fn workload(s: &Storage) -> BTreeMap<(String, String), f64> {
    let mut done: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut count = |op: &str, table: &str| *done.entry((op.into(), table.into())).or_default() += 1.0;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let e = s.create_execution(new_execution("metered", "1.0.0")).await.unwrap();
        count("write", "executions");
        ids.push(e.id);
    }
    for id in &ids[..2] {
        s.complete_execution(*id, ExecutionCompletion::new(ExecutionStatus::Completed)).await.unwrap();
        count("write", "executions");
    }
    s.update_execution(
        ids[2],
        ExecutionUpdate { metadata: Some(json!({ "k": 1 }).into()), ..Default::default() },
    )
    .await
    .unwrap();
    count("write", "executions");
    for id in ids.iter().chain(&ids[..1]) {
        s.get_execution(*id).await.unwrap();
        count("read", "executions");
    }
    for _ in 0..2 {
        s.list_executions(ExecutionFilter::default(), page(2, None)).await.unwrap();
        count("list", "executions");
    }
    s.count_executions(ExecutionFilter::default()).await.unwrap();
    count("count", "executions");
    s.search_executions("hello", page(10, None)).await.unwrap();
    count("search", "executions");
    s.append_event(ids[2], NewEvent::new(EventKind::StepResult, json!({ "step": 1 }))).await.unwrap();
    count("write", "execution_events");
    s.list_events(ids[2]).await.unwrap();
    count("list", "execution_events");
    for actor in ["alice", "bob"] {
        s.append_audit(vec![audit("pattern.create", actor), audit("pattern.update", actor)]).await.unwrap();
        count("write", "audit_logs");
    }
    s.query_audit(AuditQuery::default(), page(10, None)).await.unwrap();
    count("list", "audit_logs");
    s.put_pattern(new_pattern("metered", "1.0.0")).await.unwrap();
    count("write", "patterns");
    s.get_pattern("metered", "1.0.0").await.unwrap();
    s.get_latest_pattern("metered").await.unwrap();
    count("read", "patterns");
    count("read", "patterns");
    s.list_pattern_versions("metered").await.unwrap();
    s.list_patterns(page(10, None)).await.unwrap();
    count("list", "patterns");
    count("list", "patterns");
    s.search_patterns("metered", page(10, None)).await.unwrap();
    count("search", "patterns");
    s.delete_pattern("metered", "1.0.0").await.unwrap();
    count("delete", "patterns");
    done
}

/// Scrapes until `done` holds for the exposition (at most `within`), returning it; panics with the last one.
async fn scrape_until(
    s: &Storage,
    within: Duration,
    what: &str,
    done: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let t = Instant::now();
    loop {
        let e = scrape(s).await;
        if done(&e) {
            return e;
        }
        assert!(t.elapsed() < within, "{what}: not within {within:?}; the last exposition:\n{}", e.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn metrics_build_info_names_backend_and_versions(h: &Harness) {
    let e = scrape(&h.storage).await;
    let info = plugin().info();
    let labels = [
        ("plugin_version", info.plugin_version.as_str()),
        ("abi_version", info.abi_version.as_str()),
        ("backend", h.backend()),
    ];
    assert_eq!(e.expect("parallax_storage_build_info", &labels), 1.0);
    assert_eq!(e.find("parallax_storage_build_info", &[]).len(), 1, "one build_info sample:\n{}", e.text);
    assert_eq!(e.types.get("parallax_storage_build_info").map(String::as_str), Some("gauge"));
    // Every family has a HELP text and a TYPE.
    for name in e.types.keys() {
        assert!(e.helps.get(name).is_some_and(|h| !h.is_empty()), "{name} has no HELP:\n{}", e.text);
    }
}

pub async fn metrics_calls_are_counted_by_operation_and_table(h: &Harness) {
    let s = &h.storage;
    let before = call_counts(&scrape(s).await);
    let done = workload(s).await;
    let e = scrape(s).await;
    let after = call_counts(&e);
    // The counts grew by exactly the calls made, and no other (operation, table) moved.
    let mut grew = BTreeMap::new();
    for (key, n) in &after {
        let d = n - before.get(key).copied().unwrap_or(0.0);
        if d != 0.0 {
            grew.insert(key.clone(), d);
        }
    }
    assert_eq!(grew, done, "calls counted by (operation, table); the exposition:\n{}", e.text);
    assert_eq!(e.types.get(DURATION).map(String::as_str), Some("summary"), "{}", e.text);
    // The summary's quantiles (the documented alert reads `{quantile="0.99"}`) and its sum, per label pair.
    for (op, table) in done.keys() {
        let labels =
            |q: &'static str| [("operation", op.as_str()), ("table", table.as_str()), ("quantile", q)];
        for q in ["0.5", "0.9", "0.95", "0.99"] {
            let v = e.expect(DURATION, &labels(q));
            // The calls were made just now, well inside the summary's window: a quantile is a real latency.
            assert!(v > 0.0 && v < 60.0, "{op}/{table} quantile {q} = {v}");
        }
        let sum = e.expect(&format!("{DURATION}_sum"), &[("operation", op), ("table", table)]);
        assert!(sum > 0.0 && sum < 600.0, "{op}/{table} sum {sum}");
    }
    // Labels take only the documented values.
    for s in e.find(DURATION_COUNT, &[]) {
        let op = s.labels["operation"].as_str();
        assert!(["read", "list", "count", "search", "write", "delete"].contains(&op), "{s:?}");
        assert!(["patterns", "executions", "execution_events", "audit_logs"]
            .contains(&s.labels["table"].as_str()));
    }
}

pub async fn metrics_errors_are_counted_by_kind(h: &Harness) {
    let s = &h.storage;
    let not_found = [("operation", "read"), ("table", "executions"), ("kind", "not_found")];
    let conflict = [("operation", "write"), ("table", "executions"), ("kind", "conflict")];
    let before = scrape(s).await;
    assert_kind(s.get_execution(id_of(MISSING)).await, ErrorKind::NotFound, "not found");
    let e = s.create_execution(new_execution("metered", "1.0.0")).await.unwrap();
    let mut again = new_execution("metered", "1.0.0");
    again.id = Some(e.id);
    assert_eq!(s.create_execution(again).await.unwrap_err().kind, ErrorKind::Conflict);
    let after = scrape(s).await;
    assert_eq!(
        after.expect(ERRORS, &not_found) - before.value_or_zero(ERRORS, &not_found),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.expect(ERRORS, &conflict) - before.value_or_zero(ERRORS, &conflict),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(after.types.get(ERRORS).map(String::as_str), Some("counter"));
    // Successful calls add no error; every error sample has exactly operation, table and kind.
    let total = |x: &Exposition| x.find(ERRORS, &[]).iter().map(|s| s.value).sum::<f64>();
    assert_eq!(total(&after) - total(&before), 2.0, "{}", after.text);
    for s in after.find(ERRORS, &[]) {
        let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(keys, ["kind", "operation", "table"], "{s:?}");
    }
}

/// A call whose future the host drops unfinished still completes inside the plugin, and is still timed: the
/// slowest calls are the ones a host gives up on, and the latency alert must see them.
pub async fn metrics_dropped_calls_are_still_counted(h: &Harness) {
    let s = &h.storage;
    let writes = [("operation", "write"), ("table", "executions")];
    let before = scrape(s).await.value_or_zero(DURATION_COUNT, &writes);
    // As `dropped_future_still_completes`: poll once, drop while pending (retry a call that finished at once).
    let mut finished_at_once = 0.0;
    let mut dropped = false;
    for _ in 0..20 {
        let mut call = Box::pin(s.create_execution(new_execution("dropped-metered", "1.0.0")));
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(call.as_mut(), cx)))
                .await;
        match first {
            std::task::Poll::Pending => {
                drop(call);
                dropped = true;
                break;
            }
            std::task::Poll::Ready(done) => {
                done.expect("a call that finished on its first poll must have succeeded");
                finished_at_once += 1.0;
            }
        }
    }
    assert!(dropped, "20 calls in a row finished on their first poll; the test proves nothing");
    let want = before + finished_at_once + 1.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = scrape(s).await;
        let n = e.value_or_zero(DURATION_COUNT, &writes);
        if n == want {
            break;
        }
        assert!(n < want, "more writes counted than made: {n} > {want}\n{}", e.text);
        assert!(
            Instant::now() < deadline,
            "the dropped write was never counted ({n} of {want}):\n{}",
            e.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn metrics_pool_gauges_are_present(h: &Harness) {
    let s = &h.storage;
    let created = s.create_execution(new_execution("pooled", "1.0.0")).await.unwrap();
    // Reads of every kind first (SQLite answers short ones on the caller's thread, from a connection taken
    // without waiting): each checkout must be counted as its checkin is.
    for _ in 0..3 {
        s.get_execution(created.id).await.unwrap();
        s.list_executions(ExecutionFilter::default(), page(10, None)).await.unwrap();
        s.query_audit(AuditQuery::default(), page(10, None)).await.unwrap();
    }
    let e = scrape(s).await;
    let [active, idle, waiting] = POOL_GAUGES.map(|g| e.expect(g, &[]));
    assert!(active + idle <= 1000.0, "active {active} + idle {idle}: a gauge wrapped around\n{}", e.text);
    for (name, v) in POOL_GAUGES.iter().zip([active, idle, waiting]) {
        assert!(v >= 0.0 && v.fract() == 0.0, "{name} = {v}");
        assert_eq!(e.types.get(*name).map(String::as_str), Some("gauge"), "{name}");
    }
    // Nothing runs between the calls: some connection (or the writer) is open, nobody waits.
    assert!(active + idle >= 1.0, "active {active} + idle {idle}:\n{}", e.text);
    assert_eq!(waiting, 0.0, "{}", e.text);
    assert_eq!(e.expect("parallax_storage_pool_acquire_timeouts_total", &[]), 0.0, "{}", e.text);
}

pub async fn metrics_table_stats_follow_the_data(h: &Harness) {
    const N: usize = 7;
    let s = h.reopen_with(json!({ "metrics": { "statsInterval": "1s" } })).await;
    for _ in 0..N {
        let e = s.create_execution(new_execution("counted", "1.0.0")).await.unwrap();
        s.append_event(e.id, NewEvent::new(EventKind::StepResult, json!({ "step": 1 }))).await.unwrap();
    }
    s.append_audit(vec![audit("a", "me"), audit("b", "me")]).await.unwrap();
    s.put_pattern(new_pattern("counted", "1.0.0")).await.unwrap();
    let rows = |e: &Exposition, t: &str| e.value(TABLE_ROWS, &[("table", t)]);
    // Every table reaches what was written into it (a fresh database: the harness wrote nothing).
    let written =
        [("patterns", 1.0), ("executions", N as f64), ("execution_events", N as f64), ("audit_logs", 2.0)];
    let e = scrape_until(&s, Duration::from_secs(30), "table_rows reach the rows written", |e| {
        written.iter().all(|(t, n)| rows(e, t) == Some(*n))
    })
    .await;
    // Only those four tables: search tables and run records are not exported.
    for (t, _) in written {
        let size = e.expect(TABLE_SIZE, &[("table", t)]);
        assert!(size >= 0.0 && size.fract() == 0.0, "{t} size {size}");
    }
    assert!(e.expect(TABLE_SIZE, &[("table", "executions")]) > 0.0, "{}", e.text);
    assert_eq!(e.find(TABLE_ROWS, &[]).len(), 4, "{}", e.text);
    assert_eq!(e.find(TABLE_SIZE, &[]).len(), 4, "{}", e.text);
    // Later writes show at a later refresh.
    for _ in 0..3 {
        s.create_execution(new_execution("counted", "1.0.0")).await.unwrap();
    }
    scrape_until(&s, Duration::from_secs(30), "table_rows{table=\"executions\"} reaches 10", |e| {
        rows(e, "executions") == Some(N as f64 + 3.0)
    })
    .await;
    s.shutdown().await.unwrap();
}

pub async fn metrics_disk_free_only_where_the_plugin_sees_the_disk(h: &Harness) {
    let e = scrape(&h.storage).await;
    if h.backend() == "postgresql" {
        // A client cannot see the server's disk: no number rather than a wrong one.
        assert!(!e.has_family(DISK_FREE), "{DISK_FREE} on PostgreSQL:\n{}", e.text);
    } else {
        let free = e.expect(DISK_FREE, &[]);
        assert!(free > 0.0 && free.fract() == 0.0, "{DISK_FREE} = {free}");
        assert_eq!(e.types.get(DISK_FREE).map(String::as_str), Some("gauge"));
    }
}

pub async fn metrics_cleanup_sets_last_success_and_rows_removed(h: &Harness) {
    let s = &h.storage;
    let removed = [("table", "executions")];
    let before = scrape(s).await;
    let old_success = before.value(LAST_SUCCESS, &[]);
    let now = Timestamp::now().as_micros();
    for k in 0..4 {
        let mut e = new_execution("aged", "1.0.0");
        e.started_at = Some(at(now - (40 + k) * DAY));
        let e = s.create_execution(e).await.unwrap();
        s.complete_execution(e.id, ExecutionCompletion::new(ExecutionStatus::Completed)).await.unwrap();
    }
    s.create_execution(new_execution("young", "1.0.0")).await.unwrap();
    let params = CleanupParams {
        target: CleanupTarget::Executions,
        older_than: Some("30d".into()),
        max_count: None,
        dry_run: false,
        include_unfinished: false,
        confirm_all: false,
    };
    // A dry run is not a run: nothing moves.
    s.cleanup(&CleanupParams { dry_run: true, ..params.clone() }).await.unwrap();
    let e = scrape(s).await;
    assert_eq!(e.value(LAST_SUCCESS, &[]), old_success, "a dry run set the last success:\n{}", e.text);
    assert_eq!(e.value_or_zero(ROWS_REMOVED, &removed), before.value_or_zero(ROWS_REMOVED, &removed));

    let report = s.cleanup(&params).await.unwrap();
    let gone = report.tables.iter().find(|t| t.table == "executions").map_or(0, |t| t.rows);
    assert_eq!(gone, 4, "{report:?}");
    // Through this instance the values show at once, without waiting for a refresh.
    let e = scrape(s).await;
    let last = e.expect(LAST_SUCCESS, &[]);
    let now_s = Timestamp::now().as_micros() as f64 / 1e6;
    assert!((now_s - 60.0..=now_s + 1.0).contains(&last), "last success {last}, now {now_s}:\n{}", e.text);
    assert_eq!(e.types.get(LAST_SUCCESS).map(String::as_str), Some("gauge"));
    assert_eq!(
        e.expect(ROWS_REMOVED, &removed) - before.value_or_zero(ROWS_REMOVED, &removed),
        4.0,
        "rows removed from executions:\n{}",
        e.text
    );
    assert_eq!(e.types.get(ROWS_REMOVED).map(String::as_str), Some("counter"));
    // No failure happened: a failure timestamp, if exported, is older than the success.
    if let Some(failed) = e.value("parallax_storage_retention_last_failure_timestamp_seconds", &[]) {
        assert!(failed < last, "last failure {failed} after last success {last}");
    }
}

pub async fn metrics_disabled_answers_invalid_input_naming_the_key(h: &Harness) {
    let s = h.reopen_with(json!({ "metrics": { "enabled": false } })).await;
    // The storage works; only the exposition is refused, by name.
    let e = s.create_execution(new_execution("unmetered", "1.0.0")).await.unwrap();
    s.get_execution(e.id).await.unwrap();
    assert_kind(s.metrics().await, ErrorKind::InvalidInput, "storage.metrics.enabled");
    assert_kind(s.metrics_text().await, ErrorKind::InvalidInput, "storage.metrics.enabled");
    s.shutdown().await.unwrap();
}

pub async fn metrics_latency_buckets_make_a_histogram(h: &Harness) {
    let s = h.reopen_with(json!({ "metrics": { "latencyBuckets": [0.001, 0.01, 0.1, 1.0] } })).await;
    for _ in 0..3 {
        s.create_execution(new_execution("bucketed", "1.0.0")).await.unwrap();
    }
    let e = scrape(&s).await;
    assert_eq!(e.types.get(DURATION).map(String::as_str), Some("histogram"), "{}", e.text);
    assert!(e.find(DURATION, &[]).is_empty(), "no quantile lines with buckets:\n{}", e.text);
    let labels = |le: &'static str| [("operation", "write"), ("table", "executions"), ("le", le)];
    let buckets: Vec<f64> = ["0.001", "0.01", "0.1", "1", "+Inf"]
        .into_iter()
        .map(|le| e.expect(&format!("{DURATION}_bucket"), &labels(le)))
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "buckets are cumulative: {buckets:?}");
    let count = e.expect(DURATION_COUNT, &[("operation", "write"), ("table", "executions")]);
    assert_eq!((buckets[4], count), (3.0, 3.0), "{}", e.text);
    // Only the configured bounds (and +Inf).
    for b in e.find(&format!("{DURATION}_bucket"), &[("operation", "write"), ("table", "executions")]) {
        assert!(["0.001", "0.01", "0.1", "1", "+Inf"].contains(&b.labels["le"].as_str()), "{b:?}");
    }
    promtool_check_metrics(&e.text);
    s.shutdown().await.unwrap();
}

pub async fn metrics_exposition_passes_promtool(h: &Harness) {
    let s = &h.storage;
    // The old entry first: audit cleanup removes a prefix of the chain (an old entry written after newer ones
    // stays), and this cleanup must remove something.
    let mut old = audit("old.thing", "me");
    old.timestamp = Some(at(Timestamp::now().as_micros() - 100 * DAY));
    s.append_audit(vec![old]).await.unwrap();
    workload(s).await;
    assert_kind(s.get_execution(id_of(MISSING)).await, ErrorKind::NotFound, "not found");
    let params = CleanupParams {
        target: CleanupTarget::AuditLogs,
        older_than: Some("90d".into()),
        max_count: None,
        dry_run: false,
        include_unfinished: false,
        confirm_all: false,
    };
    s.cleanup(&params).await.unwrap();
    let text = s.metrics_text().await.unwrap();
    promtool_check_metrics(&text);
    // Every documented family is in it (disk space where the plugin can see the disk).
    let e = Exposition::parse(&text);
    let mut families = vec![
        DURATION,
        ERRORS,
        TABLE_ROWS,
        TABLE_SIZE,
        LAST_SUCCESS,
        ROWS_REMOVED,
        "parallax_storage_pool_acquire_timeouts_total",
        "parallax_storage_build_info",
    ];
    families.extend(POOL_GAUGES);
    if h.backend() != "postgresql" {
        families.push(DISK_FREE);
    }
    for f in families {
        assert!(e.has_family(f), "{f} missing from:\n{text}");
    }
    // No secret in the text: the PostgreSQL password (if any) appears nowhere.
    if let Some(pw) = h.config["postgresql"]["password"].as_str() {
        assert!(!text.contains(pw), "the password is in the exposition");
    }
}
