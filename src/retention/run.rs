//! One cleanup or retention run, the same on every backend: check the request, resolve the limit, count, refuse
//! to empty a table unconfirmed, take the runner lock, record the run, let the backend delete, record the
//! outcome and report.

use std::time::{Duration, Instant};

use parallax_storage_abi::retention::{
    CleanupParams, CleanupReport, CleanupTarget, RetentionRuleView, RetentionRunParams, RetentionRunResult,
    RetentionStatus, TableReport,
};

use super::{schedule, Plan, Run, RunStatus, Store, Tally, Trigger};
use crate::{
    config::{duration, RetentionRule},
    error::{Error, Result},
    rules::{self, Selection},
    time,
};

/// How many recorded runs `retention_status` shows.
pub(crate) const STATUS_RUNS: usize = 20;

/// A checked cleanup request: what to remove, before the limit is resolved against the data.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub target: CleanupTarget,
    pub older_than: Option<Duration>,
    pub max_count: Option<u64>,
    pub include_unfinished: bool,
}

impl Spec {
    /// Checks `cleanup` params; a bad value is refused naming it and the accepted form.
    pub fn from_params(p: &CleanupParams) -> Result<Spec> {
        let older_than = match &p.older_than {
            None => None,
            Some(text) => Some(
                duration::parse_age(text)
                    .map_err(|m| Error::invalid(format!("--older-than {text:?}: {m}")))?,
            ),
        };
        let max_count = match p.max_count {
            None => None,
            Some(n) if n >= 1 => Some(n as u64),
            Some(n) => {
                return Err(Error::invalid(format!(
                    "--max-count {n}: expected a whole number of at least 1 (the newest executions to keep)"
                )))
            }
        };
        if p.target == CleanupTarget::AuditLogs {
            if max_count.is_some() {
                return Err(Error::invalid("--max-count applies to executions only; audit logs go by age"));
            }
            if p.include_unfinished {
                return Err(Error::invalid("--include-unfinished applies to executions only"));
            }
        }
        if older_than.is_none() && max_count.is_none() {
            return Err(Error::invalid(format!(
                "a cleanup of {} needs --older-than AGE (e.g. 30d){}",
                if p.target == CleanupTarget::Executions { "executions" } else { "audit logs" },
                if p.target == CleanupTarget::Executions { " or --max-count N" } else { "" }
            )));
        }
        Ok(Spec { target: p.target, older_than, max_count, include_unfinished: p.include_unfinished })
    }

    /// The configured rule of `target` as a spec; `None` when the rule is absent, disabled or empty.
    fn from_rule(target: CleanupTarget, rule: &Option<RetentionRule>) -> Option<Spec> {
        let rule = rule.as_ref().filter(|r| r.enabled)?;
        if rule.max_age.is_none() && rule.max_count.is_none() {
            return None;
        }
        Some(Spec { target, older_than: rule.max_age, max_count: rule.max_count, include_unfinished: false })
    }

    pub(crate) fn cutoff(&self, now: i64) -> Option<i64> {
        self.older_than.map(|age| now.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)))
    }

    /// The selection against the data as it is now; `None` selects nothing.
    pub(crate) async fn resolve<S: Store>(&self, store: &S, now: i64) -> Result<Option<Selection>> {
        Ok(self.resolve_chained(store, now).await?.0)
    }

    /// [`Spec::resolve`], with the audit chain's checkpoint a run that deletes records first
    /// ([`record_checkpoint`]): audit selections are narrowed to a prefix of the chain
    /// ([`crate::audit_chain::narrow`]).
    pub(crate) async fn resolve_chained<S: Store>(
        &self,
        store: &S,
        now: i64,
    ) -> Result<(Option<Selection>, Option<crate::audit_chain::Checkpoint>)> {
        let nth = match (self.target, self.max_count) {
            (CleanupTarget::Executions, Some(n)) => store.nth_newest_execution(n).await?,
            _ => None,
        };
        let Some(before) = rules::retention_limit(self.cutoff(now), nth) else { return Ok((None, None)) };
        let sel = Selection { target: self.target, before, include_unfinished: self.include_unfinished };
        match self.target {
            CleanupTarget::AuditLogs => {
                let (sel, cp) = crate::audit_chain::narrow(store, sel).await?;
                Ok((Some(sel), cp))
            }
            CleanupTarget::Executions => Ok((Some(sel), None)),
        }
    }

    pub(crate) fn report(&self, now: i64, dry_run: bool) -> CleanupReport {
        CleanupReport {
            target: self.target.as_str().to_string(),
            dry_run,
            cutoff: self.cutoff(now).map(time::rfc3339),
            max_count: self.max_count,
            ..CleanupReport::default()
        }
    }
}

/// Records the audit chain's new checkpoint before a run deletes the entries up to it: interrupted at any
/// point, what stays verifies from the checkpoint on (entries at or below it still present are "awaiting
/// removal", and the next run removes them).
pub(crate) async fn record_checkpoint<S: Store>(
    store: &S,
    checkpoint: Option<crate::audit_chain::Checkpoint>,
) -> Result<()> {
    match checkpoint {
        Some(cp) => store.set_chain_checkpoint(cp).await,
        None => Ok(()),
    }
}

pub(crate) fn main_table(target: CleanupTarget) -> &'static str {
    match target {
        CleanupTarget::Executions => "executions",
        CleanupTarget::AuditLogs => "audit_logs",
    }
}

/// What `sel` would remove, as a report (nothing selected: an empty report with the table's row count).
pub(crate) async fn plan<S: Store>(store: &S, sel: &Option<Selection>, spec: &Spec) -> Result<Plan> {
    match sel {
        Some(sel) => store.plan_cleanup(sel.clone()).await,
        None => {
            // Nothing can be selected; count the table with a limit no row is below (stored times start in 1970).
            let none = Selection {
                target: spec.target,
                before: (0, rules::MIN_ID.to_string()),
                include_unfinished: false,
            };
            let mut p = store.plan_cleanup(none).await?;
            p.unfinished_kept = 0;
            Ok(p)
        }
    }
}

fn going(plan: &Plan) -> u64 {
    plan.tables.first().map_or(0, |t| t.rows)
}

/// The `cleanup` op.
pub async fn cleanup<S: Store>(store: &S, params: CleanupParams) -> Result<CleanupReport> {
    let started = Instant::now();
    let spec = Spec::from_params(&params)?;
    // A cleanup that changes something holds the runner lock before it counts: what it counts (for the
    // `--yes` rule, the limit of `--max-count` and the report) is then not being removed by another run
    // meanwhile, which could make "every row" look true (a spurious refusal) or false.
    let _lock =
        if params.dry_run { None } else { Some(store.lock_runner().await?.ok_or_else(runner_locked)?) };
    let now = time::now_micros();
    let (sel, checkpoint) = spec.resolve_chained(store, now).await?;
    let mut report = spec.report(now, params.dry_run);
    if params.dry_run {
        let planned = plan(store, &sel, &spec).await?;
        report.unfinished_kept = planned.unfinished_kept;
        report.rows_left = Some(planned.total_rows.saturating_sub(going(&planned)));
        report.tables = planned.tables;
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    // A real run does not count everything first (on a large table that is most of the work): a few probes
    // say whether it would empty the table and how many unfinished rows it keeps.
    if let Some(sel) = &sel {
        let check = store.precheck(sel.clone()).await?;
        report.unfinished_kept = check.unfinished_kept;
        if check.selects_any && !check.keeps_any && !params.confirm_all {
            return Err(rules::confirm_removing_everything(spec.target));
        }
    }
    mark_interrupted(store).await?;
    let mut run = Run::start(Trigger::Manual, None);
    store.save_run(run.clone()).await?;
    let tally = Tally::default();
    let outcome = match sel {
        Some(sel) => match record_checkpoint(store, checkpoint).await {
            Ok(()) => store.cleanup(sel, tally.clone()).await,
            Err(e) => Err(e),
        },
        None => Ok(vec![TableReport { table: main_table(spec.target).into(), ..TableReport::default() }]),
    };
    finish(store, &mut run, &tally, outcome.as_ref().err()).await;
    let tables = outcome.map_err(|e| failed(&spec, &tally, e))?;
    report.tables = tables;
    report.run_id = Some(run.id);
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The runner lock is held by another run.
pub(crate) fn runner_locked() -> Error {
    Error::conflict(
        "another cleanup, archive or retention run holds this database's runner lock (another process or host); \
         try again when it has finished (`parallax storage retention status` shows the running one)",
    )
}

/// A failed cleanup's error names what was already deleted. It keeps the cause's kind, so the cause is quoted
/// by its message (its `Display` would repeat the kind: "unavailable: … : unavailable: …").
pub(crate) fn failed(spec: &Spec, tally: &Tally, e: Error) -> Error {
    Error::new(
        e.kind(),
        format!(
            "cleanup of {} failed after removing {}: {}",
            spec.target.as_str(),
            tally.describe(),
            e.0.message
        ),
    )
}

/// Records the end of `run` (a record that cannot be saved is logged: the cleanup's own outcome matters more)
/// and reports it to the metrics ([`crate::metrics::Metrics::retention_finished`]): its end time and the rows
/// it removed. Dry runs never get here.
pub(crate) async fn finish<S: Store>(store: &S, run: &mut Run, tally: &Tally, error: Option<&Error>) {
    finish_unreported(store, run, tally, error).await;
    store.metrics().retention_finished(
        run.status == RunStatus::Succeeded,
        run.finished_at.unwrap_or_else(time::now_micros),
        &run.rows,
    );
}

/// [`finish`] without the metrics: for a run inside another run (an archive run of one rule of a retention
/// run), whose rows the outer run's tally counts and whose outcome the outer run reports.
pub(crate) async fn finish_unreported<S: Store>(
    store: &S,
    run: &mut Run,
    tally: &Tally,
    error: Option<&Error>,
) {
    run.finished_at = Some(time::now_micros());
    run.rows = tally.snapshot();
    run.status = if error.is_some() { RunStatus::Failed } else { RunStatus::Succeeded };
    run.error = error.map(|e| e.to_string());
    if let Err(e) = store.save_run(run.clone()).await {
        tracing::error!(run = %run.id, error = %e, "could not record the end of a retention run");
    }
}

/// With the runner lock held, a run still marked running died with its process: mark it interrupted.
pub(crate) async fn mark_interrupted<S: Store>(store: &S) -> Result<()> {
    for mut r in store.runs(STATUS_RUNS).await? {
        if r.status == RunStatus::Running {
            r.status = RunStatus::Interrupted;
            store.save_run(r).await?;
        }
    }
    Ok(())
}

/// The configured policy's parts, executions first.
fn policy<S: Store>(store: &S) -> Vec<Spec> {
    let r = &store.storage_config().retention;
    [
        Spec::from_rule(CleanupTarget::Executions, &r.executions),
        Spec::from_rule(CleanupTarget::AuditLogs, &r.audit_logs),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn skipped(why: String) -> RetentionRunResult {
    RetentionRunResult { ran: false, skipped: Some(why), ..RetentionRunResult::default() }
}

/// Runs the configured policy once: manually, or as the run of a schedule tick (skipped when that tick, or a
/// later one, already has a run, or when another instance holds the runner lock: skip, never queue).
pub async fn run_policy<S: crate::archive::Store>(
    store: &S,
    trigger: Trigger,
    tick: Option<i64>,
    dry_run: bool,
) -> Result<RetentionRunResult> {
    let specs = policy(store);
    if specs.is_empty() {
        return Ok(skipped(
            "no retention rule is enabled (storage.retention.executions / auditLogs with maxAge or maxCount)"
                .into(),
        ));
    }
    let now = time::now_micros();
    if dry_run {
        let mut reports = Vec::new();
        let mut archives = Vec::new();
        for spec in &specs {
            let sel = spec.resolve(store, now).await?;
            let p = plan(store, &sel, spec).await?;
            if let Some(destination) = &store.storage_config().retention.archive_destination {
                archives.push(crate::archive::run::dry_report(store, destination, spec, now, &p).await?);
            }
            let mut report = spec.report(now, true);
            report.unfinished_kept = p.unfinished_kept;
            report.rows_left = Some(p.total_rows.saturating_sub(going(&p)));
            report.tables = p.tables;
            reports.push(report);
        }
        return Ok(RetentionRunResult {
            ran: false,
            skipped: Some("dry run".into()),
            run: None,
            reports,
            archives,
        });
    }
    let Some(_lock) = store.lock_runner().await? else {
        return Ok(skipped("another instance holds this database's runner lock".into()));
    };
    if let Some(t) = tick {
        if store.last_tick().await?.is_some_and(|last| last >= t) {
            return Ok(skipped(format!("the tick of {} already has a run", time::rfc3339(t))));
        }
    }
    mark_interrupted(store).await?;
    let mut run = Run::start(trigger, tick);
    match store.save_run(run.clone()).await {
        Ok(()) => {}
        Err(e) if e.kind() == parallax_storage_abi::ErrorKind::Conflict => {
            return Ok(skipped(format!(
                "the tick of {} already has a run",
                tick.map_or_else(String::new, time::rfc3339)
            )));
        }
        Err(e) => return Err(e),
    }
    let tally = Tally::default();
    let mut reports = Vec::new();
    let mut archives = Vec::new();
    let mut error: Option<Error> = None;
    // Every rule runs even when an earlier one failed (a failing executions cleanup must not stop audit
    // retention); the run fails if any rule did, naming each failure.
    for spec in &specs {
        let started = Instant::now();
        let result = async {
            // With an archive destination, each rule archives what it removes first (an archive run of its
            // own, recorded beside this one; this run keeps the tick).
            if let Some(destination) = &store.storage_config().retention.archive_destination {
                let (mut report, archived) =
                    crate::archive::run::archive_rule(store, destination, spec, now, trigger, &tally).await?;
                report.run_id = Some(run.id.clone());
                archives.push(archived);
                return Ok::<_, Error>(report);
            }
            let (sel, checkpoint) = spec.resolve_chained(store, now).await?;
            let mut report = spec.report(now, false);
            if let Some(sel) = sel {
                record_checkpoint(store, checkpoint).await?;
                report.tables = store.cleanup(sel, tally.clone()).await?;
            }
            report.run_id = Some(run.id.clone());
            report.duration_ms = started.elapsed().as_millis() as u64;
            Ok::<_, Error>(report)
        }
        .await;
        match result {
            Ok(r) => reports.push(r),
            Err(e) => {
                let e = failed(spec, &tally, e);
                error = Some(match error {
                    None => e,
                    Some(first) => Error::new(first.kind(), format!("{}; {}", first.0.message, e.0.message)),
                });
            }
        }
    }
    finish(store, &mut run, &tally, error.as_ref()).await;
    match error {
        Some(e) => {
            if trigger == Trigger::Manual {
                tracing::error!(run = %run.id, error = %e, "retention run failed");
            }
            Err(e)
        }
        None => {
            tracing::info!(run = %run.id, trigger = trigger.as_str(), removed = %tally.describe(), "retention run finished");
            Ok(RetentionRunResult { ran: true, skipped: None, run: Some(run.record()), reports, archives })
        }
    }
}

/// The `retention_run` op.
pub async fn retention_run<S: crate::archive::Store>(
    store: &S,
    p: RetentionRunParams,
) -> Result<RetentionRunResult> {
    match &p.tick {
        None => run_policy(store, Trigger::Manual, None, p.dry_run).await,
        Some(text) => {
            let tick = time::parse_rfc3339(text).ok_or_else(|| {
                Error::invalid(format!(
                    "tick {text:?}: expected an RFC 3339 UTC time such as 2026-01-31T02:00:00Z"
                ))
            })?;
            // A tick in the future, or one the schedule never fires at, would make the real ticks before it
            // look done (a run is skipped when a later tick already has one).
            if tick > time::now_micros() + 60_000_000 {
                return Err(Error::invalid(format!(
                    "tick {text:?} is in the future; give a past fire time of storage.retention.cleanupSchedule"
                )));
            }
            if let Some(s) = &store.storage_config().retention.cleanup_schedule {
                if s.latest_at_or_before(tick) != Some(tick) {
                    return Err(Error::invalid(format!(
                        "tick {text:?} is not a fire time of cleanupSchedule {:?}; give one such as {}",
                        s.expr,
                        s.latest_at_or_before(time::now_micros()).map_or_else(String::new, time::rfc3339)
                    )));
                }
            }
            run_policy(store, Trigger::Scheduled, Some(tick), p.dry_run).await
        }
    }
}

fn rule_view(r: &Option<RetentionRule>) -> Option<RetentionRuleView> {
    r.as_ref().map(|r| RetentionRuleView {
        enabled: r.enabled,
        max_age: r.max_age.map(duration::format_age),
        max_count: r.max_count,
    })
}

/// The `retention_status` op.
pub async fn status<S: Store>(store: &S) -> Result<RetentionStatus> {
    let r = &store.storage_config().retention;
    let scheduled = schedule::wanted(r);
    Ok(RetentionStatus {
        schedule: r.cleanup_schedule.as_ref().map(|s| s.expr.clone()),
        scheduled,
        next_run: if scheduled {
            r.cleanup_schedule.as_ref().and_then(|s| s.next_after(time::now_micros())).map(time::rfc3339)
        } else {
            None
        },
        executions: rule_view(&r.executions),
        audit_logs: rule_view(&r.audit_logs),
        runs: store.runs(STATUS_RUNS).await?.iter().map(Run::record).collect(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn params(target: CleanupTarget, older: Option<&str>, max: Option<i64>) -> CleanupParams {
        CleanupParams {
            target,
            older_than: older.map(str::to_string),
            max_count: max,
            dry_run: false,
            include_unfinished: false,
            confirm_all: false,
        }
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (older, needle) in [("0d", "\"0d\""), ("-5d", "\"-5d\""), ("banana", "\"banana\""), ("30", "30d")]
        {
            let e = Spec::from_params(&params(CleanupTarget::Executions, Some(older), None)).unwrap_err();
            assert_eq!(e.kind(), parallax_storage_abi::ErrorKind::InvalidInput);
            assert!(e.to_string().contains(needle) && e.to_string().contains("--older-than"), "{e}");
        }
        let e = Spec::from_params(&params(CleanupTarget::Executions, Some("30d"), Some(-1))).unwrap_err();
        assert!(e.to_string().contains("--max-count -1") && e.to_string().contains("at least 1"), "{e}");
        let e = Spec::from_params(&params(CleanupTarget::Executions, None, None)).unwrap_err();
        assert!(e.to_string().contains("--older-than"), "{e}");
        let e = Spec::from_params(&params(CleanupTarget::AuditLogs, Some("90d"), Some(5))).unwrap_err();
        assert!(e.to_string().contains("executions only"), "{e}");
        let s = Spec::from_params(&params(CleanupTarget::AuditLogs, Some("90d"), None)).unwrap();
        assert_eq!(s.older_than, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(s.cutoff(100 * 86_400 * 1_000_000), Some(10 * 86_400 * 1_000_000));
    }

    #[test]
    fn more_bad_values_and_accepted_forms() {
        let e = Spec::from_params(&params(CleanupTarget::Executions, Some("30d"), Some(0))).unwrap_err();
        assert!(e.to_string().contains("--max-count 0"), "{e}");
        let mut p = params(CleanupTarget::AuditLogs, Some("90d"), None);
        p.include_unfinished = true;
        let e = Spec::from_params(&p).unwrap_err();
        assert!(e.to_string().contains("--include-unfinished applies to executions only"), "{e}");
        let e = Spec::from_params(&params(CleanupTarget::AuditLogs, None, None)).unwrap_err();
        assert!(
            e.to_string().contains("audit logs needs --older-than") && !e.to_string().contains("max-count"),
            "{e}"
        );
        let s = Spec::from_params(&params(CleanupTarget::Executions, None, Some(7))).unwrap();
        assert_eq!((s.older_than, s.max_count, s.cutoff(1_000)), (None, Some(7), None));
        for (text, secs) in
            [("P30D", 30 * 86_400), ("1d12h", 36 * 3_600), ("2w", 14 * 86_400), ("90m", 5_400)]
        {
            let s = Spec::from_params(&params(CleanupTarget::Executions, Some(text), None)).unwrap();
            assert_eq!(s.older_than, Some(Duration::from_secs(secs)), "{text}");
        }
        // A cutoff before 1970 selects nothing stored, and never overflows.
        let s = Spec::from_params(&params(CleanupTarget::Executions, Some("36500d"), None)).unwrap();
        assert!(s.cutoff(5).unwrap() < 0);
    }

    // ------------------------------------------------------------------ the driver on an in-memory store

    use std::{
        collections::BTreeMap,
        sync::{
            atomic::{AtomicBool, AtomicU64, Ordering},
            Arc, Mutex,
        },
    };

    use parallax_storage_abi::{ErrorKind, ExecutionStatus};

    use crate::{
        config::{CronSchedule, RetentionConfig, RetentionRule, StorageConfig},
        retention::{Plan, RunnerLock, SAMPLE_IDS},
        rules::Key,
    };

    pub(crate) const DAY: i64 = 86_400_000_000;

    /// A [`Store`] in memory: rows are `(time, id, status)` (no status for audit entries), every obligation of
    /// the trait kept as simply as possible, so the driver's own decisions can be tested.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub config: StorageConfig,
        pub executions: Mutex<Vec<(i64, String, ExecutionStatus)>>,
        pub audit: Mutex<Vec<(i64, String)>>,
        pub runs: Mutex<Vec<Run>>,
        pub locked: Arc<AtomicBool>,
        /// Fail `cleanup` with `Unavailable` once this many rows went.
        pub fail_after: Option<u64>,
        pub cleanups: AtomicU64,
        /// Archive: whole records by id (an execution without one is made up from its row, with one event).
        pub records: Mutex<BTreeMap<String, crate::archive::ExecutionRecord>>,
        pub audit_records: Mutex<BTreeMap<String, parallax_storage_abi::AuditEntry>>,
        /// Archive: calls of `delete_*` and `import_*`; deletes fail with `Unavailable` after this many.
        pub deletes: AtomicU64,
        pub imports: AtomicU64,
        pub fail_deletes_after: Option<u64>,
        pub metrics: crate::metrics::Metrics,
    }

    impl crate::metrics::Source for Fake {
        fn metrics(&self) -> &crate::metrics::Metrics {
            &self.metrics
        }
    }

    struct Unlock(Arc<AtomicBool>);

    impl Drop for Unlock {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
        }
    }

    impl Fake {
        pub fn with(retention: RetentionConfig) -> Fake {
            Fake { config: StorageConfig { retention, ..StorageConfig::default() }, ..Fake::default() }
        }

        pub fn execution(&self, days_ago: i64, n: u8, status: ExecutionStatus) -> String {
            let id = format!("0190b3f2-7c1e-7a00-8000-0000000000{n:02x}");
            self.executions.lock().unwrap().push((time::now_micros() - days_ago * DAY, id.clone(), status));
            id
        }

        pub fn audit_entry(&self, days_ago: i64, n: u8) -> String {
            let id = format!("0190b3f2-7c1e-7a00-8000-0000000001{n:02x}");
            self.audit.lock().unwrap().push((time::now_micros() - days_ago * DAY, id.clone()));
            id
        }

        pub fn execution_ids(&self) -> Vec<String> {
            let mut v: Vec<String> = self.executions.lock().unwrap().iter().map(|r| r.1.clone()).collect();
            v.sort();
            v
        }

        fn rows(&self, target: CleanupTarget) -> Vec<(i64, String, Option<ExecutionStatus>)> {
            match target {
                CleanupTarget::Executions => self
                    .executions
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(t, id, s)| (*t, id.clone(), Some(*s)))
                    .collect(),
                CleanupTarget::AuditLogs => {
                    self.audit.lock().unwrap().iter().map(|(t, id)| (*t, id.clone(), None)).collect()
                }
            }
        }
    }

    impl crate::audit_chain::Store for Fake {}

    impl Store for Fake {
        fn storage_config(&self) -> &StorageConfig {
            &self.config
        }

        async fn nth_newest_execution(&self, n: u64) -> Result<Option<Key>> {
            let mut keys: Vec<Key> =
                self.executions.lock().unwrap().iter().map(|(t, id, _)| (*t, id.clone())).collect();
            keys.sort_by(|a, b| b.cmp(a));
            Ok(keys.into_iter().nth(n as usize - 1))
        }

        async fn plan_cleanup(&self, sel: Selection) -> Result<Plan> {
            let rows = self.rows(sel.target);
            let mut going: Vec<&(i64, String, Option<ExecutionStatus>)> =
                rows.iter().filter(|(t, id, s)| sel.selects(*t, id, *s)).collect();
            going.sort_by_key(|r| (r.0, r.1.clone()));
            let kept =
                rows.iter().filter(|(t, id, s)| s.is_some_and(|s| sel.keeps_unfinished(*t, id, s))).count();
            let main = TableReport {
                table: main_table(sel.target).into(),
                rows: going.len() as u64,
                oldest: going.first().map(|r| time::rfc3339(r.0)),
                newest: going.last().map(|r| time::rfc3339(r.0)),
                sample_ids: going.iter().take(SAMPLE_IDS).map(|r| r.1.clone()).collect(),
                ..TableReport::default()
            };
            Ok(Plan { tables: vec![main], unfinished_kept: kept as u64, total_rows: rows.len() as u64 })
        }

        async fn cleanup(&self, sel: Selection, tally: Tally) -> Result<Vec<TableReport>> {
            self.cleanups.fetch_add(1, Ordering::SeqCst);
            let table = main_table(sel.target);
            let mut removed = 0;
            loop {
                if self.fail_after.is_some_and(|n| removed >= n) {
                    return Err(Error::unavailable("the disk went away"));
                }
                // One row per step, as a batch of one.
                let step = match sel.target {
                    CleanupTarget::Executions => {
                        let mut rows = self.executions.lock().unwrap();
                        let at = rows.iter().position(|(t, id, s)| sel.selects(*t, id, Some(*s)));
                        at.map(|i| rows.remove(i)).is_some()
                    }
                    CleanupTarget::AuditLogs => {
                        let mut rows = self.audit.lock().unwrap();
                        let at = rows.iter().position(|(t, id)| sel.selects(*t, id, None));
                        at.map(|i| rows.remove(i)).is_some()
                    }
                };
                if !step {
                    break;
                }
                removed += 1;
                tally.add(table, 1);
            }
            Ok(vec![TableReport {
                table: table.into(),
                rows: removed,
                rows_in_batches: removed,
                batches: removed,
                ..TableReport::default()
            }])
        }

        async fn lock_runner(&self) -> Result<Option<RunnerLock>> {
            if self.locked.swap(true, Ordering::SeqCst) {
                return Ok(None);
            }
            Ok(Some(RunnerLock(Box::new(Unlock(self.locked.clone())))))
        }

        async fn save_run(&self, run: Run) -> Result<()> {
            let mut runs = self.runs.lock().unwrap();
            if let Some(r) = runs.iter_mut().find(|r| r.id == run.id) {
                *r = run;
                return Ok(());
            }
            if run.tick.is_some() && runs.iter().any(|r| r.tick == run.tick) {
                return Err(Error::conflict("that tick already has a run"));
            }
            runs.push(run);
            Ok(())
        }

        async fn runs(&self, limit: usize) -> Result<Vec<Run>> {
            // Newest first; runs started in the same microsecond in reverse order of saving.
            let runs = self.runs.lock().unwrap();
            let mut v: Vec<(usize, Run)> = runs.iter().cloned().enumerate().collect();
            v.sort_by_key(|(i, r)| std::cmp::Reverse((r.started_at, *i)));
            Ok(v.into_iter().take(limit).map(|(_, r)| r).collect())
        }

        async fn last_tick(&self) -> Result<Option<i64>> {
            Ok(self.runs.lock().unwrap().iter().filter_map(|r| r.tick).max())
        }
    }

    impl Fake {
        pub(crate) fn execution_record(
            &self,
            t: i64,
            id: &str,
            s: ExecutionStatus,
        ) -> crate::archive::ExecutionRecord {
            if let Some(r) = self.records.lock().unwrap().get(id) {
                return r.clone();
            }
            crate::archive::ExecutionRecord {
                execution: parallax_storage_abi::Execution {
                    id: id.into(),
                    pattern_name: "p".into(),
                    pattern_version: "1.0.0".into(),
                    status: s,
                    input: abi_stable::std_types::ROption::RSome(format!("{{\"n\":\"{id}\"}}").into()),
                    output: abi_stable::std_types::ROption::RNone,
                    error: abi_stable::std_types::ROption::RNone,
                    started_at: t,
                    completed_at: abi_stable::std_types::ROption::RSome(t + 1000),
                    duration_ms: abi_stable::std_types::ROption::RSome(1),
                    metadata: abi_stable::std_types::ROption::RNone,
                    tags: Default::default(),
                },
                events: vec![parallax_storage_abi::ExecutionEvent {
                    id: id.replacen("0190", "0191", 1).into(),
                    execution_id: id.into(),
                    seq: 1,
                    kind: parallax_storage_abi::EventKind::StepResult,
                    payload: "{\"ok\":true}".into(),
                    recorded_at: t + 1,
                }],
            }
        }

        fn audit_record(&self, t: i64, id: &str) -> parallax_storage_abi::AuditEntry {
            if let Some(a) = self.audit_records.lock().unwrap().get(id) {
                return a.clone();
            }
            parallax_storage_abi::AuditEntry {
                id: id.into(),
                timestamp: t,
                action: "pattern.create".into(),
                actor: abi_stable::std_types::ROption::RSome("alice".into()),
                resource_type: abi_stable::std_types::ROption::RNone,
                resource_id: abi_stable::std_types::ROption::RNone,
                details: abi_stable::std_types::ROption::RSome("{\"a\":1}".into()),
                ip_address: abi_stable::std_types::ROption::RNone,
                user_agent: abi_stable::std_types::ROption::RNone,
            }
        }

        fn count_delete(&self) -> Result<()> {
            let n = self.deletes.fetch_add(1, Ordering::SeqCst);
            if self.fail_deletes_after.is_some_and(|max| n >= max) {
                return Err(Error::unavailable("the disk went away"));
            }
            Ok(())
        }
    }

    impl crate::archive::Store for Fake {
        async fn scan_executions(
            &self,
            sel: Selection,
            after: Option<Key>,
            limit: usize,
        ) -> Result<Vec<crate::archive::ExecutionRecord>> {
            let mut rows = self.executions.lock().unwrap().clone();
            rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            Ok(rows
                .into_iter()
                .filter(|(t, id, s)| {
                    sel.selects(*t, id, Some(*s)) && after.as_ref().is_none_or(|a| (*t, id) > (a.0, &a.1))
                })
                .take(limit)
                .map(|(t, id, s)| self.execution_record(t, &id, s))
                .collect())
        }

        async fn scan_audit(
            &self,
            sel: Selection,
            after: Option<Key>,
            limit: usize,
        ) -> Result<Vec<parallax_storage_abi::AuditEntry>> {
            let mut rows = self.audit.lock().unwrap().clone();
            rows.sort();
            Ok(rows
                .into_iter()
                .filter(|(t, id)| {
                    sel.selects(*t, id, None) && after.as_ref().is_none_or(|a| (*t, id) > (a.0, &a.1))
                })
                .take(limit)
                .map(|(t, id)| self.audit_record(t, &id))
                .collect())
        }

        async fn delete_executions(&self, ids: Vec<String>) -> Result<crate::archive::Deleted> {
            self.count_delete()?;
            let mut d = crate::archive::Deleted::default();
            let mut rows = self.executions.lock().unwrap();
            let gone: Vec<(i64, String, ExecutionStatus)> =
                rows.iter().filter(|r| r.2.is_final() && ids.contains(&r.1)).cloned().collect();
            rows.retain(|r| !(r.2.is_final() && ids.contains(&r.1)));
            drop(rows);
            for (t, id, s) in gone {
                d.rows += 1;
                d.events += self.execution_record(t, &id, s).events.len() as u64;
                self.records.lock().unwrap().remove(&id);
            }
            Ok(d)
        }

        async fn delete_audit(&self, ids: Vec<String>) -> Result<crate::archive::Deleted> {
            self.count_delete()?;
            let mut rows = self.audit.lock().unwrap();
            let before = rows.len();
            rows.retain(|r| !ids.contains(&r.1));
            Ok(crate::archive::Deleted { rows: (before - rows.len()) as u64, events: 0 })
        }

        async fn import_executions(
            &self,
            records: Vec<crate::archive::ExecutionRecord>,
        ) -> Result<crate::archive::Imported> {
            self.imports.fetch_add(1, Ordering::SeqCst);
            let mut i = crate::archive::Imported::default();
            for r in records {
                let id = r.execution.id.to_string();
                if self.executions.lock().unwrap().iter().any(|e| e.1 == id) {
                    i.skipped += 1;
                    continue;
                }
                i.inserted += 1;
                i.events_inserted += r.events.len() as u64;
                self.executions.lock().unwrap().push((
                    r.execution.started_at,
                    id.clone(),
                    r.execution.status,
                ));
                self.records.lock().unwrap().insert(id, r);
            }
            Ok(i)
        }

        async fn import_audit(
            &self,
            entries: Vec<parallax_storage_abi::AuditEntry>,
        ) -> Result<crate::archive::Imported> {
            self.imports.fetch_add(1, Ordering::SeqCst);
            let mut i = crate::archive::Imported::default();
            for a in entries {
                let id = a.id.to_string();
                if self.audit.lock().unwrap().iter().any(|e| e.1 == id) {
                    i.skipped += 1;
                    continue;
                }
                i.inserted += 1;
                self.audit.lock().unwrap().push((a.timestamp, id.clone()));
                self.audit_records.lock().unwrap().insert(id, a);
            }
            Ok(i)
        }
    }

    fn rule(max_age_days: Option<u64>, max_count: Option<u64>) -> Option<RetentionRule> {
        Some(RetentionRule {
            enabled: true,
            max_age: max_age_days.map(|d| Duration::from_secs(d * 86_400)),
            max_count,
        })
    }

    pub(crate) fn policy_config(schedule: Option<&str>) -> RetentionConfig {
        RetentionConfig {
            executions: rule(Some(30), Some(100)),
            audit_logs: rule(Some(90), None),
            cleanup_schedule: schedule.map(|s| CronSchedule::parse(s).unwrap()),
            run_schedule: true,
            archive_destination: None,
        }
    }

    fn executions(older: &str) -> CleanupParams {
        params(CleanupTarget::Executions, Some(older), None)
    }

    #[tokio::test]
    async fn a_tick_in_the_future_or_off_schedule_is_refused() {
        let store = Fake::with(policy_config(Some("0 2 * * *")));
        let tick = |t: &str| RetentionRunParams { tick: Some(t.into()), dry_run: false };
        let e = retention_run(&store, tick("2999-01-01T02:00:00Z")).await.unwrap_err();
        assert!(e.kind() == ErrorKind::InvalidInput && e.to_string().contains("in the future"), "{e}");
        let e = retention_run(&store, tick("2024-01-01T03:00:00Z")).await.unwrap_err();
        assert!(e.to_string().contains("not a fire time") && e.to_string().contains("0 2 * * *"), "{e}");
        assert!(store.runs.lock().unwrap().is_empty(), "nothing recorded");
        let r = retention_run(&store, tick("2024-01-01T02:00:00Z")).await.unwrap();
        assert!(r.ran, "{r:?}");
    }

    #[tokio::test]
    async fn removing_everything_needs_confirmation_and_nothing_is_touched_before() {
        let store = Fake::default();
        store.execution(40, 1, ExecutionStatus::Completed);
        store.execution(41, 2, ExecutionStatus::Failed);
        let e = cleanup(&store, executions("30d")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("--yes") && e.to_string().contains("every execution"), "{e}");
        assert_eq!(store.execution_ids().len(), 2);
        assert!(store.runs.lock().unwrap().is_empty(), "a refused cleanup records no run");
        assert_eq!(store.cleanups.load(Ordering::SeqCst), 0, "and never reached the backend's delete");
        assert!(!store.locked.load(Ordering::SeqCst), "and let go of the lock");
        // A dry run needs no confirmation; confirmAll goes ahead.
        let r = cleanup(&store, CleanupParams { dry_run: true, ..executions("30d") }).await.unwrap();
        assert_eq!((r.tables[0].rows, r.rows_left, r.run_id.clone()), (2, Some(0), None));
        let r = cleanup(&store, CleanupParams { confirm_all: true, ..executions("30d") }).await.unwrap();
        assert_eq!((r.tables[0].rows, r.rows_left), (2, None), "a real run does not count what stays");
        assert!(store.execution_ids().is_empty());
        // Nothing left: nothing to confirm.
        let r = cleanup(&store, executions("30d")).await.unwrap();
        assert_eq!(r.tables[0].rows, 0);
    }

    #[tokio::test]
    async fn a_cleanup_is_recorded_and_reported() {
        let store = Fake::default();
        let old = store.execution(40, 1, ExecutionStatus::Completed);
        let stuck = store.execution(45, 2, ExecutionStatus::Running);
        let young = store.execution(1, 3, ExecutionStatus::Completed);
        let dry = cleanup(&store, CleanupParams { dry_run: true, ..executions("30d") }).await.unwrap();
        assert!(dry.dry_run && dry.run_id.is_none());
        assert_eq!((dry.tables[0].rows, dry.unfinished_kept, dry.rows_left), (1, 1, Some(2)));
        assert_eq!(dry.tables[0].sample_ids, [old]);
        assert!(store.runs.lock().unwrap().is_empty(), "a dry run records nothing");
        assert_eq!(store.execution_ids().len(), 3, "a dry run removes nothing");

        let now = time::now_micros();
        let r = cleanup(&store, executions("30d")).await.unwrap();
        assert!(!r.dry_run);
        let cutoff = time::parse_rfc3339(r.cutoff.as_deref().unwrap()).unwrap();
        assert!((now - 30 * DAY..=time::now_micros() - 30 * DAY).contains(&cutoff), "{r:?}");
        assert_eq!((r.tables[0].rows, r.unfinished_kept, r.rows_left), (1, 1, None));
        assert_eq!(store.execution_ids(), [stuck, young]);
        let runs = store.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!(r.run_id.as_ref(), Some(&run.id));
        assert_eq!(
            (run.trigger, run.status, run.tick, run.error.clone()),
            (Trigger::Manual, RunStatus::Succeeded, None, None)
        );
        assert_eq!(run.rows, BTreeMap::from([("executions".to_string(), 1)]));
        assert!(run.finished_at.is_some_and(|f| f >= run.started_at));
        assert!(!store.locked.load(Ordering::SeqCst), "the lock is released");

        // max_count beyond the rows: nothing selected, still a recorded run.
        let r = cleanup(&store, params(CleanupTarget::Executions, None, Some(5))).await.unwrap();
        assert_eq!(
            (r.tables[0].table.as_str(), r.tables[0].rows, r.rows_left, r.unfinished_kept),
            ("executions", 0, None, 0)
        );
        assert_eq!(store.runs.lock().unwrap().len(), 2);
        let dry = cleanup(
            &store,
            CleanupParams { dry_run: true, ..params(CleanupTarget::Executions, None, Some(5)) },
        )
        .await
        .unwrap();
        assert_eq!(
            (dry.tables[0].table.as_str(), dry.tables[0].rows, dry.rows_left),
            ("executions", 0, Some(2))
        );
    }

    #[tokio::test]
    async fn finished_runs_report_to_the_metrics_and_dry_runs_do_not() {
        let store = Fake::with(policy_config(None));
        store.execution(40, 1, ExecutionStatus::Completed);
        store.execution(45, 2, ExecutionStatus::Completed);
        store.execution(1, 3, ExecutionStatus::Completed);
        cleanup(&store, CleanupParams { dry_run: true, ..executions("30d") }).await.unwrap();
        run_policy(&store, Trigger::Manual, None, true).await.unwrap();
        assert_eq!(store.metrics.retention_times(), (None, None), "dry runs are not reported");
        assert!(!store.metrics.rendered_counters().contains("rows_removed"));

        let before = time::now_micros();
        cleanup(&store, executions("30d")).await.unwrap();
        let (success, failure) = store.metrics.retention_times();
        assert!(success.is_some_and(|t| t >= before) && failure.is_none(), "{success:?}");
        assert_eq!(success, store.runs.lock().unwrap()[0].finished_at, "the recorded end time");
        let text = store.metrics.rendered_counters();
        assert!(
            text.contains("parallax_storage_retention_rows_removed_total{table=\"executions\"} 2"),
            "{text}"
        );

        // A failed policy run: the failure time, and the rows it did remove.
        let store = Fake { fail_after: Some(1), ..Fake::with(policy_config(None)) };
        for n in 1..=3 {
            store.execution(400, n, ExecutionStatus::Completed);
        }
        run_policy(&store, Trigger::Manual, None, false).await.unwrap_err();
        let (success, failure) = store.metrics.retention_times();
        assert!(success.is_none() && failure.is_some(), "{success:?} {failure:?}");
        let text = store.metrics.rendered_counters();
        assert!(
            text.contains("parallax_storage_retention_rows_removed_total{table=\"executions\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn max_count_keeps_the_newest_of_any_status() {
        let store = Fake::default();
        let a = store.execution(50, 1, ExecutionStatus::Completed);
        let b = store.execution(45, 2, ExecutionStatus::Running);
        let c = store.execution(40, 3, ExecutionStatus::Failed);
        let d = store.execution(10, 4, ExecutionStatus::Cancelled);
        let e = store.execution(5, 5, ExecutionStatus::Completed);
        let f = store.execution(1, 6, ExecutionStatus::Pending);
        let r = cleanup(&store, params(CleanupTarget::Executions, None, Some(3))).await.unwrap();
        assert_eq!(
            (r.tables[0].rows, r.unfinished_kept, r.max_count, r.cutoff.clone()),
            (2, 1, Some(3), None)
        );
        assert_eq!(store.execution_ids(), [b.clone(), d.clone(), e.clone(), f.clone()]);
        // Both limits: the larger wins.
        cleanup(&store, params(CleanupTarget::Executions, Some("30d"), Some(2))).await.unwrap();
        assert_eq!(store.execution_ids(), [b.clone(), e.clone(), f.clone()]);
        cleanup(&store, params(CleanupTarget::Executions, Some("3d"), Some(100))).await.unwrap();
        assert_eq!(store.execution_ids(), [b, f]);
        let _ = (a, c);
    }

    #[tokio::test]
    async fn a_failure_names_what_was_already_removed_and_is_recorded() {
        let store = Fake { fail_after: Some(2), ..Fake::default() };
        for n in 1..=4 {
            store.execution(40, n, ExecutionStatus::Completed);
        }
        store.execution(1, 9, ExecutionStatus::Completed);
        let e = cleanup(&store, executions("30d")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "the cause's kind is kept");
        assert_eq!(
            e.0.message,
            "cleanup of executions failed after removing 2 executions: the disk went away"
        );
        let runs = store.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, RunStatus::Failed);
        assert_eq!(runs[0].rows, BTreeMap::from([("executions".to_string(), 2)]));
        assert_eq!(
            runs[0].error.as_deref(),
            Some("unavailable: the disk went away"),
            "the cause, with its kind"
        );
        assert!(runs[0].finished_at.is_some());
        assert!(!store.locked.load(Ordering::SeqCst), "a failed run releases the lock");
        assert_eq!(store.execution_ids().len(), 3);
        // The scheduled policy fails the same way, recorded, and says which part failed.
        let store = Fake { fail_after: Some(0), ..Fake::with(policy_config(None)) };
        store.execution(40, 1, ExecutionStatus::Completed);
        let e = run_policy(&store, Trigger::Scheduled, Some(7 * DAY), false).await.unwrap_err();
        // Every rule ran (audit retention is not stopped by the executions failure); both failures are named.
        assert_eq!(
            e.0.message,
            "cleanup of executions failed after removing nothing: the disk went away; cleanup of auditLogs failed \
             after removing nothing: the disk went away"
        );
        let runs = store.runs.lock().unwrap().clone();
        assert_eq!((runs[0].status, runs[0].tick), (RunStatus::Failed, Some(7 * DAY)));
        // The failed tick counts as run (the next tick retries, not this one again).
        let r = run_policy(&store, Trigger::Scheduled, Some(7 * DAY), false).await.unwrap();
        assert!(!r.ran && r.skipped.unwrap().contains("already has a run"));
    }

    #[tokio::test]
    async fn a_held_lock_refuses_a_cleanup_and_skips_a_run() {
        let store = Fake::with(policy_config(None));
        store.execution(40, 1, ExecutionStatus::Completed);
        store.execution(1, 2, ExecutionStatus::Completed);
        let held = store.lock_runner().await.unwrap().unwrap();
        let e = cleanup(&store, executions("30d")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.to_string().contains("runner lock") && e.to_string().contains("retention status"), "{e}");
        // The lock comes before the counting: a run in progress is not "every row" for this one to confirm.
        let e = cleanup(&store, executions("1d")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        let r = run_policy(&store, Trigger::Scheduled, Some(DAY), false).await.unwrap();
        assert!(!r.ran && r.skipped.unwrap().contains("another instance"), "skip, never queue");
        // A dry run does not need the lock.
        let dry = cleanup(&store, CleanupParams { dry_run: true, ..executions("30d") }).await.unwrap();
        assert_eq!(dry.tables[0].rows, 1);
        assert!(store.runs.lock().unwrap().is_empty() && store.execution_ids().len() == 2);
        drop(held);
        assert!(run_policy(&store, Trigger::Scheduled, Some(DAY), false).await.unwrap().ran);
    }

    #[tokio::test]
    async fn one_run_per_tick_and_interrupted_runs_are_marked() {
        let store = Fake::with(policy_config(None));
        let old = store.execution(40, 1, ExecutionStatus::Completed);
        let kept = store.execution(1, 2, ExecutionStatus::Completed);
        store.audit_entry(100, 1);
        let young_audit = store.audit_entry(1, 2);
        // A run that died with its process.
        let mut dead = Run::start(Trigger::Manual, None);
        dead.started_at -= DAY;
        store.save_run(dead.clone()).await.unwrap();

        let r = run_policy(&store, Trigger::Scheduled, Some(10 * DAY), false).await.unwrap();
        assert!(r.ran && r.skipped.is_none(), "{r:?}");
        let run = r.run.clone().unwrap();
        assert_eq!((run.trigger.as_str(), run.status.as_str()), ("scheduled", "succeeded"));
        assert_eq!(run.tick, Some(time::rfc3339(10 * DAY)));
        assert_eq!(run.rows, BTreeMap::from([("executions".to_string(), 1), ("audit_logs".to_string(), 1)]));
        assert_eq!(
            r.reports.iter().map(|p| p.target.as_str()).collect::<Vec<_>>(),
            ["executions", "auditLogs"]
        );
        assert!(r.reports.iter().all(|p| p.run_id.as_ref() == Some(&run.id)));
        assert_eq!(store.execution_ids(), [kept]);
        assert_eq!(
            store.audit.lock().unwrap().iter().map(|a| a.1.clone()).collect::<Vec<_>>(),
            [young_audit]
        );
        let runs = store.runs(10).await.unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].id, dead.id);
        assert_eq!(runs[1].status, RunStatus::Interrupted, "the dead run is marked once the lock is held");
        assert_eq!(runs[0].record(), run);

        for tick in [10 * DAY, 9 * DAY] {
            let r = run_policy(&store, Trigger::Scheduled, Some(tick), false).await.unwrap();
            assert!(!r.ran && r.run.is_none(), "{r:?}");
            assert!(r.skipped.unwrap().contains(&time::rfc3339(tick)));
        }
        assert!(run_policy(&store, Trigger::CatchUp, Some(10 * DAY), false).await.unwrap().skipped.is_some());
        assert_eq!(store.runs.lock().unwrap().len(), 2);
        let r = run_policy(&store, Trigger::Scheduled, Some(11 * DAY), false).await.unwrap();
        assert!(r.ran);
        let r = retention_run(&store, RetentionRunParams::default()).await.unwrap();
        assert_eq!(r.run.map(|r| (r.trigger, r.tick)), Some(("manual".to_string(), None)));
        let _ = old;
    }

    #[tokio::test]
    async fn a_policy_dry_run_reports_per_rule_and_records_nothing() {
        let store = Fake::with(policy_config(None));
        store.execution(40, 1, ExecutionStatus::Completed);
        store.execution(40, 2, ExecutionStatus::Running);
        store.audit_entry(100, 1);
        let r = retention_run(&store, RetentionRunParams { tick: None, dry_run: true }).await.unwrap();
        assert!(!r.ran && r.run.is_none() && r.skipped.as_deref() == Some("dry run"), "{r:?}");
        let got: Vec<(String, u64, u64, bool)> = r
            .reports
            .iter()
            .map(|p| (p.target.clone(), p.tables[0].rows, p.unfinished_kept, p.dry_run))
            .collect();
        assert_eq!(got, [("executions".into(), 1, 1, true), ("auditLogs".into(), 1, 0, true)]);
        assert!(store.runs.lock().unwrap().is_empty());
        assert_eq!(store.execution_ids().len(), 2);
        assert_eq!(store.cleanups.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn no_enabled_rule_skips_with_the_reason() {
        for retention in [
            RetentionConfig::default(),
            RetentionConfig {
                executions: Some(RetentionRule { enabled: false, ..rule(Some(1), None).unwrap() }),
                ..Default::default()
            },
            RetentionConfig {
                audit_logs: Some(RetentionRule { enabled: true, max_age: None, max_count: None }),
                ..Default::default()
            },
        ] {
            let store = Fake::with(retention);
            store.execution(40, 1, ExecutionStatus::Completed);
            let r = retention_run(&store, RetentionRunParams::default()).await.unwrap();
            assert!(!r.ran && r.skipped.unwrap().contains("no retention rule is enabled"));
            assert!(store.runs.lock().unwrap().is_empty() && store.execution_ids().len() == 1);
        }
        let store = Fake::with(policy_config(None));
        let e = retention_run(&store, RetentionRunParams { tick: Some("02:00".into()), dry_run: false })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("\"02:00\"") && e.to_string().contains("RFC 3339"), "{e}");
        // Fractions up to microseconds are one tick.
        let t = |s: &str| RetentionRunParams { tick: Some(s.into()), dry_run: false };
        assert!(retention_run(&store, t("2026-01-31T02:00:00Z")).await.unwrap().ran);
        assert!(!retention_run(&store, t("2026-01-31T02:00:00.000000Z")).await.unwrap().ran);
        assert!(!retention_run(&store, t("2026-01-31T02:00:00.0Z")).await.unwrap().ran);
    }

    #[tokio::test]
    async fn status_shows_rules_schedule_next_run_and_runs() {
        let store = Fake::with(policy_config(Some("0 2 * * *")));
        let s = status(&store).await.unwrap();
        assert_eq!((s.schedule.as_deref(), s.scheduled), (Some("0 2 * * *"), true));
        let next = time::parse_rfc3339(s.next_run.as_deref().unwrap()).unwrap();
        let now = time::now_micros();
        assert!(next > now && next <= now + DAY && next % DAY == 2 * 3_600_000_000, "{s:?}");
        let ex = s.executions.unwrap();
        assert_eq!((ex.enabled, ex.max_age.as_deref(), ex.max_count), (true, Some("30d"), Some(100)));
        assert_eq!(s.audit_logs.unwrap().max_age.as_deref(), Some("90d"));
        assert!(s.runs.is_empty());
        for _ in 0..25 {
            cleanup(&store, executions("30d")).await.unwrap();
        }
        let s = status(&store).await.unwrap();
        assert_eq!(s.runs.len(), STATUS_RUNS, "at most {STATUS_RUNS} runs");
        // Not scheduled without a schedule (rules alone), nor with a schedule but no enabled rule.
        let s = status(&Fake::with(policy_config(None))).await.unwrap();
        assert!(!s.scheduled && s.next_run.is_none() && s.schedule.is_none());
        let only_schedule = RetentionConfig {
            cleanup_schedule: Some(CronSchedule::parse("0 2 * * *").unwrap()),
            ..Default::default()
        };
        let s = status(&Fake::with(only_schedule)).await.unwrap();
        assert!(!s.scheduled && s.next_run.is_none() && s.schedule.is_some(), "{s:?}");
    }
}
