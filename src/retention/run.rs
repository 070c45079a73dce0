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
const STATUS_RUNS: usize = 20;

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

    fn cutoff(&self, now: i64) -> Option<i64> {
        self.older_than.map(|age| now.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)))
    }

    /// The selection against the data as it is now; `None` selects nothing.
    async fn resolve<S: Store>(&self, store: &S, now: i64) -> Result<Option<Selection>> {
        let nth = match (self.target, self.max_count) {
            (CleanupTarget::Executions, Some(n)) => store.nth_newest_execution(n).await?,
            _ => None,
        };
        Ok(rules::retention_limit(self.cutoff(now), nth).map(|before| Selection {
            target: self.target,
            before,
            include_unfinished: self.include_unfinished,
        }))
    }

    fn report(&self, now: i64, dry_run: bool) -> CleanupReport {
        CleanupReport {
            target: self.target.as_str().to_string(),
            dry_run,
            cutoff: self.cutoff(now).map(time::rfc3339),
            max_count: self.max_count,
            ..CleanupReport::default()
        }
    }
}

fn main_table(target: CleanupTarget) -> &'static str {
    match target {
        CleanupTarget::Executions => "executions",
        CleanupTarget::AuditLogs => "audit_logs",
    }
}

/// What `sel` would remove, as a report (nothing selected: an empty report with the table's row count).
async fn plan<S: Store>(store: &S, sel: &Option<Selection>, spec: &Spec) -> Result<Plan> {
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
    let now = time::now_micros();
    let sel = spec.resolve(store, now).await?;
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
    let _lock = store.lock_runner().await?.ok_or_else(|| {
        Error::conflict(
            "another cleanup or retention run holds this database's runner lock (another process or host); \
             try again when it has finished (`parallax storage retention status` shows the running one)",
        )
    })?;
    mark_interrupted(store).await?;
    let mut run = Run::start(Trigger::Manual, None);
    store.save_run(run.clone()).await?;
    let tally = Tally::default();
    let outcome = match sel {
        Some(sel) => store.cleanup(sel, tally.clone()).await,
        None => Ok(vec![TableReport { table: main_table(spec.target).into(), ..TableReport::default() }]),
    };
    finish(store, &mut run, &tally, outcome.as_ref().err()).await;
    let tables = outcome.map_err(|e| failed(&spec, &tally, e))?;
    report.tables = tables;
    report.run_id = Some(run.id);
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// A failed cleanup's error names what was already deleted.
fn failed(spec: &Spec, tally: &Tally, e: Error) -> Error {
    Error::new(
        e.kind(),
        format!("cleanup of {} failed after removing {}: {e}", spec.target.as_str(), tally.describe()),
    )
}

/// Records the end of `run`; a record that cannot be saved is logged (the cleanup's own outcome matters more).
async fn finish<S: Store>(store: &S, run: &mut Run, tally: &Tally, error: Option<&Error>) {
    run.finished_at = Some(time::now_micros());
    run.rows = tally.snapshot();
    run.status = if error.is_some() { RunStatus::Failed } else { RunStatus::Succeeded };
    run.error = error.map(|e| e.to_string());
    if let Err(e) = store.save_run(run.clone()).await {
        tracing::error!(run = %run.id, error = %e, "could not record the end of a retention run");
    }
}

/// With the runner lock held, a run still marked running died with its process: mark it interrupted.
async fn mark_interrupted<S: Store>(store: &S) -> Result<()> {
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
pub async fn run_policy<S: Store>(
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
        for spec in &specs {
            let sel = spec.resolve(store, now).await?;
            let p = plan(store, &sel, spec).await?;
            let mut report = spec.report(now, true);
            report.unfinished_kept = p.unfinished_kept;
            report.rows_left = Some(p.total_rows.saturating_sub(going(&p)));
            report.tables = p.tables;
            reports.push(report);
        }
        return Ok(RetentionRunResult { ran: false, skipped: Some("dry run".into()), run: None, reports });
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
    let mut error = None;
    for spec in &specs {
        let started = Instant::now();
        let result = async {
            let sel = spec.resolve(store, now).await?;
            let mut report = spec.report(now, false);
            if let Some(sel) = sel {
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
                error = Some(failed(spec, &tally, e));
                break;
            }
        }
    }
    finish(store, &mut run, &tally, error.as_ref()).await;
    match error {
        Some(e) => {
            tracing::error!(run = %run.id, trigger = trigger.as_str(), error = %e, "retention run failed; the next tick retries");
            Err(e)
        }
        None => {
            tracing::info!(run = %run.id, trigger = trigger.as_str(), removed = %tally.describe(), "retention run finished");
            Ok(RetentionRunResult { ran: true, skipped: None, run: Some(run.record()), reports })
        }
    }
}

/// The `retention_run` op.
pub async fn retention_run<S: Store>(store: &S, p: RetentionRunParams) -> Result<RetentionRunResult> {
    match &p.tick {
        None => run_policy(store, Trigger::Manual, None, p.dry_run).await,
        Some(text) => {
            let tick = time::parse_rfc3339(text).ok_or_else(|| {
                Error::invalid(format!(
                    "tick {text:?}: expected an RFC 3339 UTC time such as 2026-01-31T02:00:00Z"
                ))
            })?;
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
mod tests {
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
}
