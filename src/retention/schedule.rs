//! The retention scheduler: while a storage instance is open and `storage.retention.cleanupSchedule` is set with
//! at least one enabled rule, it runs the configured policy at each tick of the schedule (UTC).
//!
//! - One run per tick across every process and host: each instance wakes at the tick and tries; the backend's
//!   runner lock lets one in (the others skip, never queue) and the tick recorded with the run makes a late
//!   instance skip too ([`super::run::run_policy`]).
//! - A missed tick (no instance was running at 02:00) runs once at the next start, as a `catch-up` run: only
//!   the latest missed tick, never one per missed tick.
//! - A failed run is recorded with its error, logged, and retried at the next tick.

use std::{sync::Weak, time::Duration};

use tokio::{runtime::Handle, task::JoinHandle};

use super::{run::run_policy, Trigger};
use crate::{
    config::{CronSchedule, RetentionConfig, RetentionRule},
    time,
};

/// Whether the configuration asks for scheduled runs.
pub fn wanted(r: &RetentionConfig) -> bool {
    let enabled = |rule: &Option<RetentionRule>| {
        rule.as_ref().is_some_and(|r| r.enabled && (r.max_age.is_some() || r.max_count.is_some()))
    };
    r.cleanup_schedule.is_some() && (enabled(&r.executions) || enabled(&r.audit_logs))
}

/// Starts the scheduler on `handle` when the configuration asks for it. It holds the store weakly, so it
/// never keeps a closed instance alive; the caller aborts it at shutdown.
pub fn spawn<S: crate::archive::Store>(handle: &Handle, store: Weak<S>) -> Option<JoinHandle<()>> {
    let cfg = store.upgrade()?.storage_config().retention.clone();
    if !wanted(&cfg) || !cfg.run_schedule {
        return None;
    }
    let schedule = cfg.cleanup_schedule.clone()?;
    Some(handle.spawn(run(store, schedule)))
}

async fn run<S: crate::archive::Store>(store: Weak<S>, schedule: CronSchedule) {
    // Catch up on the latest tick missed while no instance was running.
    let now = time::now_micros();
    if let Some(latest) = schedule.latest_at_or_before(now) {
        let Some(s) = store.upgrade() else { return };
        match s.last_tick().await {
            Ok(last) if last.is_none_or(|t| t < latest) => tick(&*s, Trigger::CatchUp, latest).await,
            Ok(_) => {}
            // Try anyway: the run checks the recorded ticks again, and logs why it fails if it does.
            Err(_) => tick(&*s, Trigger::CatchUp, latest).await,
        }
    }
    let mut after = time::now_micros();
    loop {
        let Some(next) = schedule.next_after(after) else {
            tracing::warn!(schedule = %schedule.expr, "retention schedule has no further fire time; scheduler stops");
            return;
        };
        // Sleep in bounded steps, re-reading the wall clock: a suspended machine or a clock change is noticed.
        loop {
            let wait = next - time::now_micros();
            if wait <= 0 {
                break;
            }
            tokio::time::sleep(Duration::from_micros(wait.min(60_000_000) as u64)).await;
        }
        let Some(s) = store.upgrade() else { return };
        tick(&*s, Trigger::Scheduled, next).await;
        after = next.max(time::now_micros());
    }
}

async fn tick<S: crate::archive::Store>(store: &S, trigger: Trigger, at: i64) {
    match run_policy(store, trigger, Some(at), false).await {
        Ok(r) if r.ran => {}
        Ok(r) => tracing::debug!(tick = %time::rfc3339(at), skipped = ?r.skipped, "retention tick skipped"),
        // Failures inside the rules are recorded with the run; any failure (also before a run could start or
        // be recorded: the database unreachable, the runs table missing) is logged here. Retried next tick.
        Err(e) => tracing::error!(
            tick = %time::rfc3339(at),
            trigger = trigger.as_str(),
            error = %e,
            "scheduled retention run failed; it is retried at the next tick"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rule(enabled: bool, max_age: Option<u64>, max_count: Option<u64>) -> Option<RetentionRule> {
        Some(RetentionRule { enabled, max_age: max_age.map(|d| Duration::from_secs(d * 86_400)), max_count })
    }

    fn config(
        executions: Option<RetentionRule>,
        audit_logs: Option<RetentionRule>,
        schedule: Option<&str>,
    ) -> RetentionConfig {
        RetentionConfig {
            executions,
            audit_logs,
            cleanup_schedule: schedule.map(|s| CronSchedule::parse(s).unwrap()),
            run_schedule: true,
            archive_destination: None,
        }
    }

    #[test]
    fn wanted_needs_a_schedule_and_an_enabled_rule_with_a_limit() {
        let daily = Some("0 2 * * *");
        assert!(!wanted(&RetentionConfig::default()));
        assert!(!wanted(&config(None, None, daily)), "a schedule with no rule does nothing");
        assert!(!wanted(&config(rule(true, Some(30), None), None, None)), "rules without a schedule");
        assert!(wanted(&config(rule(true, Some(30), None), None, daily)));
        assert!(wanted(&config(rule(true, None, Some(1000)), None, daily)), "maxCount alone is a limit");
        assert!(wanted(&config(None, rule(true, Some(90), None), daily)));
        assert!(
            !wanted(&config(rule(false, Some(30), Some(5)), rule(false, Some(90), None), daily)),
            "disabled"
        );
        assert!(!wanted(&config(rule(true, None, None), rule(true, None, None), daily)), "enabled, no limit");
        assert!(wanted(&config(rule(false, Some(30), None), rule(true, Some(90), None), daily)));
    }
}
