//! Retention benchmark on the file store (issue 12): 100,000 expired executions (one event each), removed by
//! our cleanup through the loaded plugin (`cleanup executions --older-than 1d`: events directory, then the
//! execution file, in writer steps, index and search entries forgotten, empty directories pruned, the run
//! recorded) against a raw baseline on an identical copy: `std::fs::remove_file` of the same files and
//! `remove_dir` of the emptied directories, from one thread, without any sync. Rows/s of both and the ratio.
//!
//! The stores are written straight in the store's format (`tests/common/file_gen.rs`), then synced (before
//! each timed part, outside it: `sync` flushes the whole machine), so neither side pays for the other's
//! writeback. Neither side syncs its removals (the plugin does not for cleanup: a removal lost to a power cut
//! is redone by the next run); the plugin syncs its run record. Opening (indexing) the store is timed apart.

#[path = "../../tests/common/file_gen.rs"]
mod file_gen;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use parallax_storage_host::retention::{CleanupParams, CleanupTarget};
use serde_json::json;

use crate::util::{self, Opts};

/// 2024-01-15T00:00:00Z.
const T0: i64 = 1_705_276_800_000_000;
/// One execution every 90 s: 100,000 span about 104 days (four months of day directories).
const STEP: i64 = 90_000_000;

fn config(base: &Path) -> serde_json::Value {
    json!({ "type": "file", "file": { "basePath": base, "format": "json" } })
}

fn sync() {
    let _ = std::process::Command::new("sync").status();
}

/// A new store at `base` (created by the plugin) holding `n` generated executions with one event each.
async fn store(base: &Path, n: usize) -> Vec<PathBuf> {
    let s =
        util::plugin().open(&config(base)).unwrap_or_else(|e| util::fail(&format!("open file store: {e}")));
    s.shutdown().await.expect("shutdown");
    file_gen::write_executions(base, n, 1, T0, STEP)
}

/// The baseline: the same files removed with plain `std::fs` calls, then the emptied directories.
fn remove_raw(files: &[PathBuf]) {
    let mut days = std::collections::BTreeSet::new();
    for f in files {
        let dir = f.with_extension("events");
        for e in std::fs::read_dir(&dir).expect("events directory").flatten() {
            std::fs::remove_file(e.path()).expect("remove event");
        }
        std::fs::remove_dir(&dir).expect("remove events directory");
        std::fs::remove_file(f).expect("remove execution");
        days.insert(f.parent().unwrap().to_path_buf());
    }
    for day in days.iter().rev() {
        let _ = std::fs::remove_dir(day);
        let _ = std::fs::remove_dir(day.parent().unwrap());
        let _ = std::fs::remove_dir(day.parent().unwrap().parent().unwrap());
    }
}

pub async fn run(opts: &Opts) {
    let n = opts.n(100_000, 5_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (ours_base, raw_base) = (dir.path().join("ours"), dir.path().join("raw"));
    let generating = Instant::now();
    store(&ours_base, n).await;
    let raw_files = store(&raw_base, n).await;
    sync();
    eprintln!(
        "# file_retention: generated 2 × {n} executions with one event each in {:.1?}",
        generating.elapsed()
    );

    let started = Instant::now();
    remove_raw(&raw_files);
    let raw_secs = started.elapsed().as_secs_f64();

    sync();
    let opening = Instant::now();
    let s = util::plugin().open(&config(&ours_base)).unwrap_or_else(|e| util::fail(&format!("open: {e}")));
    let open_secs = opening.elapsed().as_secs_f64();
    let params = CleanupParams {
        target: CleanupTarget::Executions,
        older_than: Some("1d".into()),
        max_count: None,
        dry_run: false,
        include_unfinished: false,
        confirm_all: true,
    };
    let started = Instant::now();
    let report = s.cleanup(&params).await.unwrap_or_else(|e| util::fail(&format!("cleanup: {e}")));
    let ours_secs = started.elapsed().as_secs_f64();
    s.shutdown().await.expect("shutdown");
    let removed = report.tables[0].rows;
    assert_eq!(removed, n as u64, "{report:?}");
    assert_eq!(report.tables[1].rows, n as u64, "{report:?}");
    let left = std::fs::read_dir(ours_base.join("executions")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "our cleanup left directories behind");

    util::report_throughput(
        "file_retention",
        n as f64 / ours_secs,
        n as f64 / raw_secs,
        "executions/s (each with its events directory and one event)",
        0.5,
        &format!(
            "{n} executions: ours {ours_secs:.2} s in {} writer steps ({} reclaimed), raw remove_file {raw_secs:.2} \
             s; opening (indexing) the store took {open_secs:.2} s, not counted",
            report.tables[0].batches,
            human(report.tables.iter().filter_map(|t| t.bytes_reclaimed).sum()),
        ),
    );
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}
