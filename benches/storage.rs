//! Storage benchmarks: our full path (host crate → ABI → loaded plugin cdylib → database) against a raw
//! baseline doing the same work in the same run, one line per scenario:
//!
//! `<scenario> ours=… baseline=… ratio=<ours/baseline> … target=… met=yes|NO # notes`
//!
//! ```sh
//! cargo bench --bench storage                 # everything (under 10 minutes on 2 cores)
//! cargo bench --bench storage -- --quick      # small counts: a smoke run
//! cargo bench --bench storage -- sqlite_      # only scenarios whose name contains `sqlite_`
//! cargo bench --bench storage -- replica      # the read replica scenarios (issue 15)
//! cargo bench --bench storage -- audit_verify # `audit verify` over 1,000,000 entries (issue 17)
//! cargo bench --bench storage -- mixed        # 16 callers, 90 % reads / 10 % writes (issue 20)
//! ```
//!
//! PostgreSQL comes from the test harness (`tests/common/pg.rs`): `PARALLAX_TEST_POSTGRES_URL`, or a
//! throwaway cluster from the installed server binaries. Results are collected into a Markdown table at the
//! end (BENCHMARKS.md holds the latest).

// The crate root is benches/storage.rs, so its modules (in benches/storage/) need explicit paths.
#[path = "storage/abi.rs"]
mod abi;
#[path = "storage/archive_pg.rs"]
mod archive_pg;
#[path = "storage/audit_verify.rs"]
mod audit_verify;
#[path = "storage/copy.rs"]
mod copy;
#[path = "storage/data.rs"]
mod data;
#[path = "storage/load.rs"]
mod load;
#[path = "storage/metrics.rs"]
mod metrics;
#[path = "storage/mixed.rs"]
mod mixed;
/// The test harness's PostgreSQL: the same server setup as `cargo test`.
#[allow(dead_code)]
#[path = "../tests/common/pg.rs"]
mod pg;
#[path = "storage/pg_writes.rs"]
mod pg_writes;
#[path = "storage/reads.rs"]
mod reads;
#[path = "storage/retention_file.rs"]
mod retention_file;
#[path = "storage/retention_pg.rs"]
mod retention_pg;
#[path = "storage/retention_sqlite.rs"]
mod retention_sqlite;
#[path = "storage/sqlite_writes.rs"]
mod sqlite_writes;
#[path = "storage/util.rs"]
mod util;

use std::time::Instant;

use util::Opts;

async fn run(opts: &Opts) {
    if opts.wants("pg_lifecycle") {
        pg_writes::lifecycle(opts).await;
    }
    if opts.wants("sqlite_writes") {
        sqlite_writes::writes(opts).await;
    }
    if opts.wants("pg_audit_batch") {
        pg_writes::audit_batches(opts).await;
    }
    audit_verify::run(opts).await; // pg_audit_verify, sqlite_audit_verify
    if opts.wants("abi_ping") {
        abi::ping(opts).await;
    }
    if opts.wants("pg_filtered_page") || opts.wants("pg_get_by_id") {
        reads::postgres(opts).await;
    }
    if opts.wants("sqlite_filtered_page") || opts.wants("sqlite_get_by_id") {
        reads::sqlite(opts).await;
    }
    if opts.wants("sqlite_mixed") {
        mixed::sqlite(opts).await;
    }
    if opts.wants("pg_mixed") {
        mixed::postgres(opts).await;
    }
    if opts.wants("pg_retention") {
        retention_pg::run(opts).await;
    }
    if opts.wants("sqlite_retention") {
        retention_sqlite::run(opts).await;
    }
    if opts.wants("file_retention") {
        retention_file::run(opts).await;
    }
    archive_pg::run(opts).await; // pg_archive, pg_restore, sqlite_archive, sqlite_restore
    copy::run(opts).await; // copy_sqlite_pg
    if opts.wants("pg_lifecycle_metrics") {
        metrics::pg_lifecycle(opts).await;
    }
    if opts.wants("sqlite_writes_metrics") {
        metrics::sqlite_writes(opts).await;
    }
    if opts.wants("pg_metrics_scrape") {
        metrics::pg_scrape(opts).await;
    }
    if opts.wants("sqlite_metrics_scrape") {
        metrics::sqlite_scrape(opts).await;
    }
    // Read replicas (issue 15), last: once the harness's streaming replica runs, it replays every later write
    // of the cluster, CPU the scenarios after it would share.
    if opts.wants("pg_replica_filtered_page") || opts.wants("pg_replica_get_by_id") {
        reads::postgres_replica(opts).await;
    }
    if opts.wants("pg_lifecycle_replicas") {
        pg_writes::lifecycle_replicas(opts).await;
    }
}

fn main() {
    let opts = Opts::parse();
    let started = Instant::now();
    // Fail on a missing or stale plugin before starting any database.
    util::plugin();
    eprintln!("# machine: {}", util::machine());
    // The host side: two workers, like the plugin's runtime on this machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-host")
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(&opts));
    util::print_table();
    eprintln!(
        "# total {:.0} s{}, load average now {}",
        started.elapsed().as_secs_f64(),
        if opts.quick { " (--quick)" } else { "" },
        util::loadavg()
    );
}
