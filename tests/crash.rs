//! Crash trials (the reliability suite's crash part; figures in RELIABILITY.md).
//!
//! - **SQLite and the file store**: a host process (this test binary run again as a child, loading the built
//!   cdylib like every test) runs 16 writers through the plugin — executions, events, completions, audit
//!   batches, patterns — and prints each write once it is acknowledged. It is SIGKILLed at a random moment
//!   (one trial in five while it is still opening). After each trial: every write it acknowledged is there,
//!   SQLite's `PRAGMA integrity_check` (run by rusqlite, not the plugin) says `ok`, no temporary file of the
//!   file store survives, and the plugin opens the store again. At the end every write acknowledged in any
//!   trial is checked once more.
//! - **PostgreSQL server crash**: a dedicated cluster (durable commits: `synchronous_commit = on`, since a
//!   commit the server acknowledged before writing its WAL may be lost by design with it off) is stopped with
//!   `pg_ctl stop -m immediate` (every third trial: SIGKILL of the postmaster) while 16 writers run through one
//!   storage object in this process. During the outage every call ends with `unavailable` or `timeout` within
//!   `acquireTimeout` plus the connect timeout; after the restart the same storage object writes again without
//!   being reopened, and every acknowledged write is there.
//!
//! Trials: `PARALLAX_CRASH_TRIALS` (default 10 for SQLite and the file store, 3 for PostgreSQL, as in CI); the
//! recorded figures come from `PARALLAX_CRASH_TRIALS=100 cargo test --test crash -- --nocapture --test-threads 1`
//! (PostgreSQL: `PARALLAX_PG_CRASH_TRIALS=20`). Each test prints one `crash figures:` line.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{file::*, *};
use parallax_storage_host::*;
use serde_json::json;

fn trials(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("crash test seed {seed}");
    seed
}

/// Not a test of its own: the child side of the trials, run with `PARALLAX_FILE_TEST_CHILD=write`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(role) = std::env::var(CHILD_ROLE) else { return };
    let config: serde_json::Value = serde_json::from_str(&std::env::var(CHILD_CONFIG).unwrap()).unwrap();
    match role.as_str() {
        "write" => child_writer(open_ok(&config), 16).await,
        other => panic!("unknown child role {other}"),
    }
}

/// One figure line per backend, for RELIABILITY.md.
struct Figures {
    backend: &'static str,
    trials: usize,
    killed_while_opening: usize,
    acked: Acked,
    started: Instant,
}

impl Figures {
    fn print(&self, extra: &str) {
        println!(
            "crash figures: {} trials={} (killed while opening: {}) acknowledged={} (executions {}, completions \
             {}, events {}, audit entries {}, patterns {}) lost=0 corruptions=0 in {:.1?}{extra}",
            self.backend,
            self.trials,
            self.killed_while_opening,
            self.acked.total(),
            self.acked.executions.len(),
            self.acked.done.len(),
            self.acked.events.len(),
            self.acked.audit.len(),
            self.acked.patterns.len(),
            self.started.elapsed()
        );
    }
}

/// Runs `n` SIGKILL trials of the child writer on the store of `config_of(trial)`; `check` runs after each
/// trial, before the plugin opens the store again.
async fn kill_trials(
    backend: &'static str,
    n: usize,
    config_of: impl Fn(usize) -> serde_json::Value,
    check: impl Fn(usize),
) -> Figures {
    let mut rng = Rng(seed());
    let mut figures = Figures {
        backend,
        trials: n,
        killed_while_opening: 0,
        acked: Acked::default(),
        started: Instant::now(),
    };
    for trial in 0..n {
        let config = config_of(trial);
        let (mut child, rx) = spawn_child("write", &config);
        let kill_after = if trial % 5 == 4 {
            figures.killed_while_opening += 1;
            Duration::from_millis(rng.below(40))
        } else {
            wait_for(&rx, "READY", Duration::from_secs(60));
            Duration::from_millis(20 + rng.below(380))
        };
        std::thread::sleep(kill_after);
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        let mut acked = Acked::default();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
            acked.record(&line);
            figures.acked.record(&line);
        }
        check(trial);
        let s = open_ok(&config);
        acked.verify(&s).await;
        s.shutdown().await.unwrap();
    }
    let s = open_ok(&config_of(n));
    figures.acked.verify(&s).await;
    let health = s.health().await.unwrap();
    assert!(health.warnings.is_empty(), "{backend}: {:?}", health.warnings);
    s.shutdown().await.unwrap();
    assert!(
        figures.acked.executions.len() > 10 * n.min(10),
        "{backend}: the children wrote too little to prove anything: {}",
        figures.acked.total()
    );
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_trials_lose_no_acknowledged_write() {
    let n = trials("PARALLAX_CRASH_TRIALS", 10);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = json!({ "type": "sqlite", "sqlite": { "path": db } });
    let figures = kill_trials("sqlite", n, |_| config.clone(), |trial| integrity_ok(&db, trial)).await;
    figures.print("");
}

/// SQLite's own check, by rusqlite (which recovers the WAL as any opener does), before the plugin opens it.
fn integrity_ok(db: &Path, trial: usize) {
    let conn = rusqlite::Connection::open(db)
        .unwrap_or_else(|e| panic!("trial {trial}: open {}: {e}", db.display()));
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "trial {trial}: PRAGMA integrity_check");
    let fk: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(fk, 0, "trial {trial}: foreign key check");
}

/// The file store in each encoding by turns (one store: each trial reopens what the one before wrote, in the
/// encoding of its own config, as an operator switching `format` would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_sigkill_trials_lose_no_acknowledged_write() {
    let n = trials("PARALLAX_CRASH_TRIALS", 10);
    let dir = tempfile::tempdir().unwrap();
    let encodings = [("yaml", false), ("json", true), ("yaml", true), ("json", false)];
    let config_of = |trial: usize| {
        let (format, compress) = encodings[trial % encodings.len()];
        config(dir.path(), format, compress)
    };
    let base = dir.path().join("store");
    let temp_files = Arc::new(Mutex::new(0usize));
    let counted = temp_files.clone();
    let check = move |_trial: usize| {
        // Temporary files of interrupted writes: left by the kill, removed by the next open.
        *counted.lock().unwrap() += tree(&base).iter().filter(|p| is_temp(p)).count();
    };
    let figures = kill_trials("file", n, config_of, check).await;
    assert!(
        tree(&dir.path().join("store")).iter().all(|p| !is_temp(p)),
        "a temporary file survived the reopen"
    );
    figures.print(&format!(
        "; {} temporary files of interrupted writes removed on reopen",
        temp_files.lock().unwrap()
    ));
}

fn is_temp(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".~"))
}

fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(tree(&p));
            }
            out.push(p);
        }
    }
    out
}

// ------------------------------------------------------------------ PostgreSQL server crash

/// How long a call may take while the server is down: the pool's `acquireTimeout` (which also bounds each
/// connection attempt), plus scheduling slack on a loaded 2-core machine.
const ACQUIRE_MS: u64 = 1000;
const OUTAGE_BOUND: Duration = Duration::from_millis(ACQUIRE_MS + 1500);

#[derive(Default)]
struct Outage {
    /// Calls that failed, by kind.
    failures: std::collections::BTreeMap<String, usize>,
    /// The slowest failed call.
    slowest: Duration,
    /// Failed calls of another kind than unavailable or timeout, or slower than the bound.
    wrong: Vec<String>,
    /// Calls that failed with the server up, before a crash (none expected).
    before_crash: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_server_crash_trials_lose_no_acknowledged_write() {
    let n = trials("PARALLAX_PG_CRASH_TRIALS", 3);
    let cluster = pg::Cluster::start(pg::ClusterOptions { durable: true, ..Default::default() });
    let db = cluster.server.fresh_database().await;
    let mut cfg = cluster.server.storage_config(&db);
    merge_json(
        &mut cfg,
        json!({ "postgresql": { "pool": { "acquireTimeout": ACQUIRE_MS, "maxConnections": 16 } } }),
    );
    let storage = plugin().open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
    let mut rng = Rng(seed());
    let acked = Arc::new(Mutex::new(Acked::default()));
    let outage = Arc::new(Mutex::new(Outage::default()));
    let started = Instant::now();
    let mut downtime = Duration::ZERO;
    for trial in 0..n {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let crashed_yet = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for t in 0..16u32 {
            let (s, acked, outage, stop, crashed_yet) =
                (storage.clone(), acked.clone(), outage.clone(), stop.clone(), crashed_yet.clone());
            writers.push(tokio::spawn(async move {
                let tag = format!("t{trial}");
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    i += 1;
                    let call = Instant::now();
                    let mut lines = Vec::new();
                    let r = write_round(&s, t, i, &tag, &mut |l| lines.push(l)).await;
                    {
                        let mut a = acked.lock().unwrap();
                        lines.iter().for_each(|l| a.record(l));
                    }
                    if let Err(e) = r {
                        let took = call.elapsed();
                        {
                            let mut o = outage.lock().unwrap();
                            *o.failures.entry(format!("{:?}", e.kind)).or_default() += 1;
                            o.slowest = o.slowest.max(took);
                            let kind_ok = matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout);
                            if !kind_ok || took > OUTAGE_BOUND {
                                o.wrong.push(format!("{:?} after {took:?}: {e}", e.kind));
                            }
                            if !crashed_yet.load(std::sync::atomic::Ordering::SeqCst) {
                                o.before_crash.push(e.to_string());
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        // From here on a failed call is part of the outage (and its aftermath: pooled connections to the dead
        // server fail once each).
        crashed_yet.store(true, std::sync::atomic::Ordering::SeqCst);
        let crashed = Instant::now();
        if trial % 3 == 2 {
            tokio::task::block_in_place(|| cluster.kill_postmaster());
        } else {
            tokio::task::block_in_place(|| cluster.crash());
        }
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
        tokio::task::block_in_place(|| cluster.start_server_after_crash());
        // The same storage object writes again, without a reopen.
        let recovered = Instant::now();
        loop {
            match storage.put_pattern(new_pattern(&format!("after-crash-{trial}"), "1.0.0")).await {
                Ok(_) => break,
                Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) => {
                    assert!(recovered.elapsed() < Duration::from_secs(30), "trial {trial}: no recovery: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("trial {trial}: after the restart: {e}"),
            }
        }
        downtime += crashed.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in writers {
            w.await.unwrap();
        }
    }
    // Every acknowledged write survived every crash.
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    acked.verify(&storage).await;
    let o = std::mem::take(&mut *outage.lock().unwrap());
    assert!(o.wrong.is_empty(), "calls during the outage: {:?}", o.wrong);
    assert!(o.before_crash.is_empty(), "calls failed before any crash: {:?}", o.before_crash);
    assert!(acked.executions.len() > 100, "too few writes to prove anything: {}", acked.total());
    println!(
        "crash figures: postgresql trials={n} (postmaster SIGKILLed: {}) acknowledged={} (executions {}, \
         completions {}, events {}, audit entries {}, patterns {}) lost=0; failed calls during outages: {:?}, \
         slowest {:?} (bound {OUTAGE_BOUND:?}); outages {:.1?} in all; in {:.1?}",
        (0..n).filter(|t| t % 3 == 2).count(),
        acked.total(),
        acked.executions.len(),
        acked.done.len(),
        acked.events.len(),
        acked.audit.len(),
        acked.patterns.len(),
        o.failures,
        o.slowest,
        downtime,
        started.elapsed()
    );
    storage.shutdown().await.unwrap();
}
