//! What this backend reports for metrics ([`crate::metrics::Source`]): pool state, table stats, disk space.
//!
//! The file store has no pool: its writer thread counts as one connection (`active` while it commits a
//! group, else `idle`), and `waiting` is the writes queued for it. Reads are answered from the in-memory
//! index and never wait for a connection. Table rows and bytes come from the index (see [`Index::rows`] and
//! [`Index::bytes`]), never from a walk of the tree.
//!
//! [`Index::rows`]: super::index::Index::rows
//! [`Index::bytes`]: super::index::Index::bytes

use super::FileBackend;
use crate::{
    error::Result,
    metrics::{Metrics, PoolState, Source, TableStat, TABLES},
};

impl Source for FileBackend {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn pool_state(&self) -> PoolState {
        let writer = self.writer.load();
        PoolState {
            active: u64::from(writer.running),
            idle: u64::from(!writer.running),
            waiting: writer.queued,
        }
    }

    async fn table_stats(&self) -> Result<Vec<TableStat>> {
        let (rows, bytes) = {
            let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
            (idx.rows(), idx.bytes)
        };
        Ok(TABLES
            .iter()
            .zip(rows.into_iter().zip(bytes))
            .map(|(&table, (rows, size_bytes))| TableStat { table, rows, size_bytes })
            .collect())
    }

    fn disk_free_bytes(&self) -> Option<u64> {
        self.disk.get()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use abi_stable::std_types::{RNone, ROption::RSome, RVec};
    use parallax_storage_abi::{
        EventKind, ExecutionStatus, NewAuditEntry, NewEvent, NewExecution, NewPattern, OpenOptions,
    };

    use super::*;
    use crate::{
        contract::Contract,
        file::{layout::Layout, load},
        rules::Completion,
    };

    async fn open(base: &Path) -> FileBackend {
        let json = serde_json::json!({ "type": "file", "file": { "basePath": base } });
        let cfg = crate::config::parse(&json.to_string()).unwrap();
        FileBackend::open(cfg, OpenOptions::default()).await.unwrap()
    }

    fn id(n: u32) -> String {
        format!("0190b3f2-7c1e-7a00-8000-{n:012}")
    }

    /// Bytes per table by walking the tree (what [`Index::bytes`](super::super::index::Index::bytes) stands
    /// for).
    fn walked(layout: &Layout) -> [u64; 4] {
        fn walk(layout: &Layout, dir: &Path, out: &mut [u64; 4]) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let path = e.path();
                if e.file_type().unwrap().is_dir() {
                    walk(layout, &path, out);
                } else if let Some(t) = load::table_of(layout, &path) {
                    out[t] += e.metadata().unwrap().len();
                }
            }
        }
        let mut out = [0; 4];
        walk(layout, &layout.base, &mut out);
        out
    }

    fn stats(rows: [u64; 4], bytes: [u64; 4]) -> Vec<TableStat> {
        TABLES
            .iter()
            .zip(rows.into_iter().zip(bytes))
            .map(|(&table, (rows, size_bytes))| TableStat { table, rows, size_bytes })
            .collect()
    }

    /// Rows and bytes follow creates, rewrites (an execution completed, a pattern stored again), events,
    /// audit batches and deletes, and match both a walk of the tree and a store loaded afresh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn table_stats_follow_every_kind_of_write() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let b = open(&base).await;
        assert_eq!(b.table_stats().await.unwrap(), stats([0; 4], [0; 4]));

        for (n, v) in (900..).zip(["1.0.0", "1.1.0", "2.0.0"]) {
            let p = NewPattern {
                id: RSome(id(n).into()),
                name: "summarize".into(),
                version: v.into(),
                description: RSome("a pattern".into()),
                definition: r#"{"steps": ["one", "two"]}"#.into(),
                created_by: RNone,
            };
            b.put_pattern(p, true).await.unwrap();
        }
        b.delete_pattern("summarize".into(), "1.1.0".into()).await.unwrap();
        for n in 1..=4u32 {
            let e = NewExecution {
                id: RSome(id(n).into()),
                pattern_name: "summarize".into(),
                pattern_version: "1.0.0".into(),
                status: ExecutionStatus::Running,
                input: RSome(format!(r#"{{"text": "input {n}"}}"#).into()),
                metadata: RNone,
                tags: RVec::new(),
                started_at: RSome(1_705_276_800_000_000 + i64::from(n) * 86_400_000_000),
            };
            b.create_execution(e, true).await.unwrap();
            for k in 1..=n {
                let ev = NewEvent {
                    kind: EventKind::StepResult,
                    payload: format!(r#"{{"step": {k}}}"#).into(),
                    recorded_at: RNone,
                };
                b.append_event(id(n), id(100 + n * 10 + k), ev).await.unwrap();
            }
        }
        let c = Completion {
            status: ExecutionStatus::Completed,
            output: RSome(
                r#"{"summary": "a much longer output than the input had, so the file grows"}"#.into(),
            ),
            error: RNone,
            completed_at: 1_705_276_800_000_000 + 2 * 86_400_000_000 + 1,
        };
        b.complete_execution(id(2), c).await.unwrap();
        let audit: Vec<NewAuditEntry> = (0..5)
            .map(|n| NewAuditEntry {
                id: RSome(id(500 + n).into()),
                timestamp: RSome(1_705_276_800_000_000 + i64::from(n)),
                action: "login".into(),
                ..Default::default()
            })
            .collect();
        b.append_audit(audit).await.unwrap();

        let got = b.table_stats().await.unwrap();
        let on_disk = walked(&b.layout);
        assert!(on_disk.iter().all(|&n| n > 0), "{on_disk:?}");
        assert_eq!(got, stats([2, 4, 1 + 2 + 3 + 4, 5], on_disk));
        b.shutdown().await.unwrap();
        drop(b);

        // A fresh load sums the same bytes.
        let b = open(&base).await;
        assert_eq!(b.table_stats().await.unwrap(), stats([2, 4, 10, 5], on_disk));
        b.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_state_is_the_writer_and_disk_free_bytes_the_base_path_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(&dir.path().join("store")).await;
        assert_eq!(b.pool_state(), PoolState { active: 0, idle: 1, waiting: 0 });
        let free = b.disk_free_bytes().expect("statvfs of basePath");
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path and a writable statvfs.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        #[allow(clippy::unnecessary_cast)]
        let size = st.f_blocks as u64 * st.f_frsize as u64;
        assert!(free > 0 && free <= size, "free {free} of {size}");
        b.shutdown().await.unwrap();
    }
}
