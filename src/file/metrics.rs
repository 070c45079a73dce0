//! What this backend reports for metrics ([`crate::metrics::Source`]): pool state, table stats, disk space.

use crate::metrics::{Metrics, Source};

use super::FileBackend;

impl Source for FileBackend {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    // TODO(issue 14): pool_state, table_stats, disk_free_bytes
}
