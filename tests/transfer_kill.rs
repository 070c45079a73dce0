//! A copy killed with SIGKILL at any step and run again finishes without losing or duplicating anything. The
//! copies are the real CLI (`target/debug/parallax storage copy --to-config target.yaml`), each in its own
//! process, paused at a named step with `PARALLAX_TRANSFER_PAUSE_AT=<step>` (it prints `transfer paused at
//! <step>` on stderr and waits) and killed there; then at random moments. After the re-run the report says
//! `resumed` and verified, the target equals the source field by field, no id is present twice (PostgreSQL's
//! partitioned tables cannot enforce it: checked with `GROUP BY id HAVING count(*) > 1`) and nothing sits in a
//! default partition.

mod common;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    cli::{self, Running},
    transfer::*,
    *,
};
use parallax_storage_host::transfer::{TransferReport, TABLES};
use parallax_storage_host::*;
use serde_json::{json, Value};

const PAUSE_ENV: &str = "PARALLAX_TRANSFER_PAUSE_AT";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
    /// The file store in YAML, gzip-compressed.
    FileYamlGz,
}

/// A store for one side of the copy: its config (also written as a CLI config file).
async fn store(backend: Backend, dir: &std::path::Path, name: &str) -> Value {
    match backend {
        Backend::Sqlite => json!({ "type": "sqlite", "sqlite": { "path": dir.join(format!("{name}.db")) } }),
        Backend::FileYamlGz => {
            json!({ "type": "file", "file": { "basePath": dir.join(name), "format": "yaml", "compress": true } })
        }
        Backend::Postgres => {
            let server = common::pg::server();
            server.storage_config(&server.fresh_database().await)
        }
    }
}

/// A populated source, a fresh (migrated, empty) target, both closed, and the source's snapshot.
struct Setup {
    dir: tempfile::TempDir,
    source: Value,
    source_file: PathBuf,
    target: Value,
    target_file: PathBuf,
    counts: Counts,
    before: Snapshot,
}

impl Setup {
    async fn new(from: Backend, to: Backend, executions: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let source = store(from, dir.path(), "source").await;
        let target = store(to, dir.path(), "target").await;
        let s = plugin().open(&source).unwrap_or_else(|e| panic!("open the source {from:?}: {e}"));
        let counts = populate_bulk(&s, executions, 2, 4).await;
        let before = full_snapshot(&s).await;
        assert_eq!(before.counts(), counts);
        s.shutdown().await.unwrap();
        let t = plugin().open(&target).unwrap_or_else(|e| panic!("open the target {to:?}: {e}"));
        t.shutdown().await.unwrap();
        let source_file = cli::write_config(&dir.path().join("source.yaml"), &source);
        let target_file = cli::write_config(&dir.path().join("target.yaml"), &target);
        Setup { dir, source, source_file, target, target_file, counts, before }
    }

    /// `parallax --output json storage copy --to-config target.yaml`, paused at `pause` or not.
    fn copy_cmd(&self, pause: Option<&str>) -> Command {
        self.copy_cmd_to(&self.target_file, pause)
    }

    fn copy_cmd_to(&self, target_file: &std::path::Path, pause: Option<&str>) -> Command {
        let to = target_file.to_string_lossy().to_string();
        let mut c =
            cli::parallax(&["storage", "copy", "--to-config", &to], &self.source_file, self.dir.path());
        if let Some(step) = pause {
            c.env(PAUSE_ENV, step);
        }
        c
    }

    /// Runs the copy to completion and returns its report.
    #[track_caller]
    fn finish(&self) -> TransferReport {
        let out = self.copy_cmd(None).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the copy failed ({}):\n{stdout}\n{stderr}", out.status);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("--output json is a transfer report ({e}):\n{stdout}\n{stderr}"))
    }

    /// The target's executions now, checking on PostgreSQL that no id is there twice and nothing sits in a
    /// default partition.
    async fn target_rows(&self, when: &str) -> u64 {
        if let Some(db) = pg_database(&self.target) {
            let f = pg_facts(&db).await;
            assert_eq!((f.duplicate_executions, f.duplicate_events), (0, 0), "{when}: ids present twice");
            assert_eq!(
                (f.default_executions, f.default_events),
                (0, 0),
                "{when}: rows in a default partition"
            );
        }
        let t = plugin().open(&self.target).unwrap_or_else(|e| panic!("{when}: open the target: {e}"));
        let n = t.count_executions(ExecutionFilter::default()).await.unwrap();
        t.shutdown().await.unwrap();
        n
    }

    /// The target equals the source, no duplicates, nothing in a default partition.
    async fn assert_done(&self, r: &TransferReport, when: &str) {
        assert_verified(r, when);
        assert_eq!(after_snapshot(r), 0, "{when}: {r:?}");
        for t in TABLES {
            let e = table(r, t);
            assert_eq!(e.source_rows, self.counts.of(t), "{when}: {t}: {e:?}");
            assert_eq!(e.conflicts, 0, "{when}: {t}: {e:?}");
        }
        let t = plugin().open(&self.target).unwrap_or_else(|e| panic!("{when}: open the target: {e}"));
        let after = full_snapshot(&t).await;
        assert_eq!(
            t.count_executions(ExecutionFilter::default()).await.unwrap(),
            self.counts.executions,
            "{when}: executions counted in the target"
        );
        t.shutdown().await.unwrap();
        assert_same(&self.before, &after, when);
        assert_pg_clean(&self.target, &self.before, when).await;
    }

    async fn drop_databases(self) {
        for config in [&self.source, &self.target] {
            if let Some(db) = pg_database(config) {
                common::pg::server().drop_database(&db).await;
            }
        }
    }
}

/// Kills a copy paused at `step`, checks what the step promises, re-runs it: resumed, verified, equal, once.
async fn kill_at(from: Backend, to: Backend, step: &str) {
    let setup = Setup::new(from, to, 2_500).await;
    let when = format!("{from:?} → {to:?} killed at {step}");
    let mut run = Running::spawn(setup.copy_cmd(Some(step)));
    run.wait_for(&format!("transfer paused at {step}"), Duration::from_secs(300));
    run.kill();

    let landed = setup.target_rows(&when).await;
    let total = setup.counts.executions;
    if let Some(db) = pg_database(&setup.target) {
        // An empty PostgreSQL target is owned by the copy: its executions pages landed by COPY in one
        // transaction with the state (the fast path), which is what this kill and the re-run exercise.
        let client = common::pg::server().client(&db).await;
        let owned: Option<bool> = client
            .query_one("SELECT (state->>'owned')::boolean FROM transfer_runs", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(owned, Some(true), "{when}");
    }
    match step {
        "after-patterns" => assert_eq!(landed, 0, "{when}: no execution copied yet"),
        "mid-executions" | "before-save" => {
            assert!(
                landed > 0 && landed < total,
                "{when}: part of the executions copied ({landed} of {total})"
            )
        }
        "mid-audit" | "before-verify" => assert_eq!(landed, total, "{when}: every execution copied"),
        other => panic!("unknown step {other}"),
    }

    let r = setup.finish();
    assert_eq!(r.mode, "resumed", "{when}: the re-run resumes the killed run: {r:?}");
    setup.assert_done(&r, &format!("{when}, re-run")).await;
    for t in TABLES {
        let e = table(&r, t);
        assert_eq!(e.copied + e.present, setup.counts.of(t), "{when}: {t} copied once in all: {e:?}");
    }
    // And once more: a catch-up that copies nothing new (it carries the tallies of the run it continues).
    let r2 = setup.finish();
    assert_eq!(r2.mode, "catch-up", "{when}, again: {r2:?}");
    for t in TABLES {
        assert_eq!(
            table(&r2, t).copied,
            table(&r, t).copied,
            "{when}, again: {t}: nothing new copied: {r2:?}"
        );
    }
    setup.assert_done(&r2, &format!("{when}, again")).await;
    setup.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgresql_killed_after_patterns() {
    kill_at(Backend::Sqlite, Backend::Postgres, "after-patterns").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgresql_killed_mid_executions() {
    kill_at(Backend::Sqlite, Backend::Postgres, "mid-executions").await;
}

/// A page landed, its state not saved: the re-run finds its rows present and counts them once. (On this owned
/// PostgreSQL target the first page and its state committed together before the pause: the re-run starts
/// after it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgresql_killed_before_save() {
    kill_at(Backend::Sqlite, Backend::Postgres, "before-save").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgresql_killed_mid_audit() {
    kill_at(Backend::Sqlite, Backend::Postgres, "mid-audit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgresql_killed_before_verify() {
    kill_at(Backend::Sqlite, Backend::Postgres, "before-verify").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_yaml_gz_to_sqlite_killed_mid_executions() {
    kill_at(Backend::FileYamlGz, Backend::Sqlite, "mid-executions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_yaml_gz_to_sqlite_killed_before_save() {
    kill_at(Backend::FileYamlGz, Backend::Sqlite, "before-save").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_to_file_yaml_gz_killed_before_save() {
    kill_at(Backend::Postgres, Backend::FileYamlGz, "before-save").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_to_file_yaml_gz_killed_mid_audit() {
    kill_at(Backend::Postgres, Backend::FileYamlGz, "mid-audit").await;
}

/// Kills at random moments (each trial after the previous kill), checking after each that no id is present
/// twice and nothing sits in a default partition; then a last run finishes, verified and equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgresql_killed_at_random_moments() {
    let setup = Setup::new(Backend::Sqlite, Backend::Postgres, 3_000).await;
    // How long a whole copy takes here (into another fresh database): the kills land within that time.
    let calibration = store(Backend::Postgres, setup.dir.path(), "calibration").await;
    plugin().open(&calibration).unwrap().shutdown().await.unwrap();
    let calibration_file = cli::write_config(&setup.dir.path().join("calibration.yaml"), &calibration);
    let started = Instant::now();
    let out = setup.copy_cmd_to(&calibration_file, None).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let whole = started.elapsed().as_millis() as u64;
    common::pg::server().drop_database(&pg_database(&calibration).unwrap()).await;

    let mut seed = now() as u64 | 1;
    let mut below = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n.max(1)
    };
    let db = pg_database(&setup.target).unwrap();
    let client = common::pg::server().client(&db).await;
    let mut landed = Vec::new();
    for trial in 0..5 {
        let mut run = Running::spawn(setup.copy_cmd(None));
        let before = *landed.last().unwrap_or(&0);
        let started = Instant::now();
        let wait = if trial < 2 {
            // The first two kills land while executions are being copied, for sure: once the target holds more
            // than before (the second after a random pause of up to 150 ms).
            loop {
                let n: i64 = client.query_one("SELECT count(*) FROM executions", &[]).await.unwrap().get(0);
                if n as u64 > before || run.child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "trial {trial}: no execution landed in 120 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if trial == 1 {
                tokio::time::sleep(Duration::from_millis(below(150))).await;
            }
            started.elapsed().as_millis() as u64
        } else {
            let wait = 50 + below(whole);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            wait
        };
        run.kill();
        let n = setup.target_rows(&format!("random kill {trial} after {wait} of ~{whole} ms")).await;
        eprintln!("trial {trial}: killed after {wait} of ~{whole} ms; {n} executions in the target");
        landed.push(n);
    }
    assert!(
        landed.iter().any(|n| *n > 0 && *n < setup.counts.executions),
        "no kill landed while executions were being copied: {landed:?}"
    );
    let r = setup.finish();
    assert!(["resumed", "catch-up", "fresh"].contains(&r.mode.as_str()), "{r:?}");
    setup
        .assert_done(&r, &format!("the run after random kills (executions landed after each: {landed:?})"))
        .await;
    setup.drop_databases().await;
}
