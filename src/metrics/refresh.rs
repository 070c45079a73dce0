//! The background refresher: table statistics and the retention run history every `statsInterval`, the
//! registry's upkeep every few seconds. A scrape only reads what it left.

use std::{sync::Weak, time::Duration};

use tokio::{runtime::Handle, task::JoinHandle, time::Instant};

use super::{registry::Inner, Source};
use crate::retention::{RunStatus, Store};

/// The longest time between two upkeeps of the registry (the summary's window moves at a third of its length).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How many recorded runs (newest first) a refresh reads to find the last success and failure.
const RUNS_READ: usize = 100;

pub(super) fn spawn<S: Source + Store>(handle: &Handle, backend: Weak<S>) -> Option<JoinHandle<()>> {
    let (interval, upkeep) = {
        let s = backend.upgrade()?;
        let m = s.metrics().inner()?;
        (
            m.stats_interval,
            m.latency.upkeep_every().unwrap_or(UPKEEP_EVERY).clamp(Duration::from_millis(10), UPKEEP_EVERY),
        )
    };
    Some(handle.spawn(run(backend, interval, upkeep)))
}

async fn run<S: Source + Store>(backend: Weak<S>, interval: Duration, upkeep: Duration) {
    let mut failing = false;
    let mut next_refresh = Instant::now();
    loop {
        {
            let Some(s) = backend.upgrade() else { return };
            let Some(m) = s.metrics().inner() else { return };
            if Instant::now() >= next_refresh {
                refresh(&*s, m, &mut failing).await;
                next_refresh = Instant::now() + interval;
            }
            m.upkeep();
        }
        let wait = next_refresh.saturating_duration_since(Instant::now()).min(upkeep);
        tokio::time::sleep(wait).await;
    }
}

/// One refresh: what fails keeps its old value, and is logged once per failure streak.
pub(super) async fn refresh<S: Source + Store>(s: &S, m: &Inner, failing: &mut bool) {
    let tables = s.table_stats().await;
    let runs = s.runs(RUNS_READ).await;
    let mut errors = Vec::new();
    {
        let mut guard = m.cache.lock().unwrap_or_else(|p| p.into_inner());
        let c = &mut *guard;
        match tables {
            Ok(t) => c.tables = Some(t),
            Err(e) => errors.push(format!("table statistics: {e}")),
        }
        match runs {
            Ok(runs) => {
                let last = |status: RunStatus| {
                    runs.iter().filter(|r| r.status == status).filter_map(|r| r.finished_at).max()
                };
                for (slot, found) in [
                    (&mut c.last_success, last(RunStatus::Succeeded)),
                    (&mut c.last_failure, last(RunStatus::Failed)),
                ] {
                    if let Some(t) = found {
                        *slot = Some(slot.map_or(t, |old| old.max(t)));
                    }
                }
            }
            Err(e) => errors.push(format!("retention run history: {e}")),
        }
    }
    // The first scrape waits for this, also when the refresh failed (it then renders without those values).
    m.refreshed.send_replace(true);
    if errors.is_empty() {
        if *failing {
            tracing::info!("storage metrics refresh works again");
        }
        *failing = false;
    } else if !*failing {
        *failing = true;
        tracing::warn!(
            errors = %errors.join("; "),
            "storage metrics refresh failed; scrapes keep the last values until it works again (logged once \
             until then)"
        );
    }
}
