//! The retention scheduler, as a storage object that stays open sees it: a tick missed while nothing was
//! running runs once at the next start (not once per missed tick, not again at the next open), and an instance
//! opened with `runSchedule: false` never runs the schedule.

use std::time::Duration;

use parallax_storage_host::{retention::RunRecord, *};

use crate::common::*;

const DAY: i64 = 86_400_000_000;

/// The harness's config with a retention policy and `schedule` (and `runSchedule` when given).
fn with_policy(h: &Harness, schedule: &str, run_schedule: Option<bool>) -> serde_json::Value {
    let mut config = h.config.clone();
    let mut retention = serde_json::json!({
        "executions": { "enabled": true, "maxAge": "30d" },
        "cleanupSchedule": schedule,
    });
    if let Some(run) = run_schedule {
        retention["runSchedule"] = serde_json::json!(run);
    }
    config["retention"] = retention;
    config
}

/// Two executions: one 40 days old and completed, one from now and completed.
async fn seed(s: &Storage) -> (Uuid, Uuid) {
    let now = Timestamp::now().as_micros();
    let mut old = new_execution("sched", "1.0.0");
    old.started_at = Some(Timestamp::from_micros(now - 40 * DAY));
    let old = s.create_execution(old).await.unwrap();
    let young = s.create_execution(new_execution("sched", "1.0.0")).await.unwrap();
    for id in [old.id, young.id] {
        s.complete_execution(id, ExecutionCompletion::new(ExecutionStatus::Completed)).await.unwrap();
    }
    (old.id, young.id)
}

/// Polls the recorded runs until `done` says yes (at most 20 s).
async fn runs_until(s: &Storage, done: impl Fn(&[RunRecord]) -> bool) -> Vec<RunRecord> {
    for _ in 0..200 {
        let runs = s.retention_status().await.unwrap().runs;
        if done(&runs) {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no such runs after 20 s: {:?}", s.retention_status().await.unwrap().runs);
}

/// The latest 02:00 UTC at or before now, as the records show it.
fn latest_two_am() -> String {
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let mut day = now.date();
    if now.hour() < 2 {
        day = day.yesterday().unwrap();
    }
    day.at(2, 0, 0, 0).strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub async fn schedule_missed_tick_runs_once_at_start(h: &Harness) {
    let (old, young) = seed(&h.storage).await;
    // Nothing runs the schedule yet: the harness's instance has no policy.
    assert!(h.storage.retention_status().await.unwrap().runs.is_empty());
    h.storage.shutdown().await.unwrap();
    h.settle().await;

    let config = with_policy(h, "0 2 * * *", None);
    let a = plugin().open(&config).unwrap_or_else(|e| panic!("open with a schedule: {e}"));
    let runs = runs_until(&a, |r| r.iter().any(|r| r.status == "succeeded")).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run.trigger, "catch-up", "{run:?}");
    assert_eq!(run.tick.as_deref(), Some(latest_two_am().as_str()), "{run:?}");
    assert_eq!(run.rows.get("executions"), Some(&1), "{run:?}");
    assert_kind(a.get_execution(old).await, ErrorKind::NotFound, "not found");
    a.get_execution(young).await.unwrap();
    let status = a.retention_status().await.unwrap();
    assert!(status.scheduled && status.schedule.as_deref() == Some("0 2 * * *"), "{status:?}");
    assert!(status.next_run.is_some(), "{status:?}");
    a.shutdown().await.unwrap();

    // Opened again before the next tick: the missed tick already has its run.
    let b = plugin().open(&config).unwrap_or_else(|e| panic!("reopen: {e}"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs = b.retention_status().await.unwrap().runs;
    assert_eq!(runs.len(), 1, "a second catch-up run: {runs:?}");
    b.shutdown().await.unwrap();
}

pub async fn schedule_not_run_when_run_schedule_is_false(h: &Harness) {
    let (old, _) = seed(&h.storage).await;
    h.storage.shutdown().await.unwrap();
    h.settle().await;
    let config = with_policy(h, "* * * * *", Some(false));
    let s = plugin().open(&config).unwrap_or_else(|e| panic!("open: {e}"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = s.retention_status().await.unwrap();
    assert!(status.runs.is_empty(), "{:?}", status.runs);
    s.get_execution(old).await.unwrap();
    s.shutdown().await.unwrap();
}
