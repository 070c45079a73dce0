//! Cleanup and retention on this backend ([`crate::retention::Store`]): persistence only; what goes and how a
//! run is checked, locked and recorded is decided in `src/retention`.

use parallax_storage_abi::retention::TableReport;

use super::FileBackend;
use crate::{
    config::StorageConfig,
    error::{Error, Result},
    retention::{Plan, Run, RunnerLock, Store, Tally},
    rules::{Key, Selection},
};

fn todo() -> Error {
    Error::unsupported("cleanup is not implemented on this backend yet")
}

impl Store for FileBackend {
    fn storage_config(&self) -> &StorageConfig {
        &self.cfg
    }

    async fn nth_newest_execution(&self, _n: u64) -> Result<Option<Key>> {
        Err(todo())
    }

    async fn plan_cleanup(&self, _sel: Selection) -> Result<Plan> {
        Err(todo())
    }

    async fn cleanup(&self, _sel: Selection, _tally: Tally) -> Result<Vec<TableReport>> {
        Err(todo())
    }

    async fn lock_runner(&self) -> Result<Option<RunnerLock>> {
        Err(todo())
    }

    async fn save_run(&self, _run: Run) -> Result<()> {
        Err(todo())
    }

    async fn runs(&self, _limit: usize) -> Result<Vec<Run>> {
        Ok(Vec::new())
    }

    async fn last_tick(&self) -> Result<Option<i64>> {
        Ok(None)
    }
}
