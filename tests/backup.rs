//! `backup` takes a consistent copy while the plugin writes. 16 writer tasks share one storage object, each
//! repeating create → event → event → complete on executions with ids it chose, recording every step it
//! attempted and every step acknowledged. A backup taken meanwhile (through the client, and through the CLI as
//! another process on SQLite) must be a snapshot: `sqlite3 DEST "PRAGMA integrity_check"` prints `ok`, and
//! opened through the plugin, each writer's rows are a prefix of its sequence of steps, holding at least every
//! step acknowledged before the backup started and nothing attempted after it ended. The file store's backup
//! opens as a file store and is such a prefix too. PostgreSQL refuses and names `pg_dump`.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{cli, transfer::*, *};
use parallax_storage_host::transfer::{BackupParams, BackupReport};
use parallax_storage_host::*;
use serde_json::json;

const WRITERS: usize = 16;

/// The steps of one execution, in the order a writer takes them.
const STEPS: [&str; 4] = ["create", "event 1", "event 2", "complete"];

/// One writer's record: every step it started (`attempted`, pushed before the call) and how many of them were
/// acknowledged (`acked`, counted after the call returned).
#[derive(Default)]
struct Record {
    attempted: Mutex<Vec<(Uuid, usize)>>,
    acked: AtomicUsize,
}

struct Writers {
    records: Vec<Arc<Record>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn writer_id(w: usize, round: usize) -> Uuid {
    id_of(&format!("0190b000-{w:04x}-7000-8000-{round:012x}"))
}

impl Writers {
    fn start(s: &Storage) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut records = Vec::new();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let record = Arc::new(Record::default());
            records.push(record.clone());
            let (s, stop) = (s.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = writer_id(w, round);
                    for (step, name) in STEPS.iter().enumerate() {
                        record.attempted.lock().unwrap().push((id, step));
                        match step {
                            0 => {
                                let mut e = new_execution("backup", "1.0.0");
                                e.id = Some(id);
                                e.input = Some(json!({ "text": format!("writer {w} round {round}") }).into());
                                s.create_execution(e).await.map(drop)
                            }
                            1 | 2 => s
                                .append_event(
                                    id,
                                    NewEvent::new(EventKind::StepResult, json!({ "step": step })),
                                )
                                .await
                                .map(drop),
                            _ => s
                                .complete_execution(id, ExecutionCompletion::new(ExecutionStatus::Completed))
                                .await
                                .map(drop),
                        }
                        .unwrap_or_else(|e| panic!("writer {w}: {name} of {id}: {e}"));
                        record.acked.fetch_add(1, Ordering::SeqCst);
                    }
                    round += 1;
                }
            }));
        }
        Writers { records, stop, tasks }
    }

    /// Steps acknowledged so far, per writer.
    fn acked(&self) -> Vec<usize> {
        self.records.iter().map(|r| r.acked.load(Ordering::SeqCst)).collect()
    }

    /// Steps started so far, per writer.
    fn attempted(&self) -> Vec<usize> {
        self.records.iter().map(|r| r.attempted.lock().unwrap().len()).collect()
    }

    async fn stop(self) -> Vec<Vec<(Uuid, usize)>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.records.iter().map(|r| r.attempted.lock().unwrap().clone()).collect()
    }
}

/// What a backup holds of the writers' executions: by id, how many of its steps are present.
async fn steps_present(s: &Storage) -> BTreeMap<Uuid, Vec<bool>> {
    let mut out = BTreeMap::new();
    for e in s.executions(ExecutionFilter::default().pattern("backup"), 500).collect().await.unwrap() {
        let events = s.list_events(e.id).await.unwrap().len();
        out.insert(e.id, vec![true, events >= 1, events >= 2, e.status == ExecutionStatus::Completed]);
    }
    out
}

/// Per writer, the backup holds a prefix of its steps: at least `acked_before[w]` of them, at most
/// `attempted_after[w]`, and nothing after the first step missing.
#[track_caller]
fn assert_prefixes(
    backup: &BTreeMap<Uuid, Vec<bool>>,
    sequences: &[Vec<(Uuid, usize)>],
    acked_before: &[usize],
    attempted_after: &[usize],
    when: &str,
) {
    let mut seen = 0;
    for (w, seq) in sequences.iter().enumerate() {
        let present: Vec<bool> =
            seq.iter().map(|(id, step)| backup.get(id).is_some_and(|steps| steps[*step])).collect();
        let k = present.iter().take_while(|p| **p).count();
        if let Some(late) = present[k..].iter().position(|p| *p) {
            let (id, step) = seq[k + late];
            panic!(
                "{when}: writer {w}: step {k} ({} of {}) is missing but the later step {} ({} of {id}) is in the \
                 backup: not a consistent snapshot",
                STEPS[seq[k].1],
                seq[k].0,
                k + late,
                STEPS[step]
            );
        }
        assert!(
            acked_before[w] <= k && k <= attempted_after[w],
            "{when}: writer {w}: the backup holds {k} steps; {} were acknowledged before it started and {} \
             attempted when it ended",
            acked_before[w],
            attempted_after[w]
        );
        seen += seq.iter().filter(|(_, step)| *step == 0).take(k.div_ceil(STEPS.len())).count();
    }
    assert_eq!(seen, backup.len(), "{when}: the backup holds executions no writer made");
}

/// `sqlite3 PATH "PRAGMA integrity_check"`, trimmed.
fn integrity_check(path: &Path) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(path)
        .arg("PRAGMA integrity_check")
        .output()
        .expect("run sqlite3 (install the sqlite3 command-line shell)");
    assert!(out.status.success(), "sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn count(s: &Storage) -> u64 {
    s.count_executions(ExecutionFilter::default().pattern("backup")).await.unwrap()
}

/// Runs `take` while 16 writers write to `h`'s storage (after they have written for a while), then checks the
/// backup `open_backup` opens: the seed data equal, a prefix per writer, counts between before and after.
async fn backup_while_writing<F, Fut>(h: &Harness, take: F, open_backup: serde_json::Value) -> BackupReport
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = BackupReport>,
{
    let seed = populate_everything(&h.storage).await;
    let seed_snapshot = full_snapshot(&h.storage).await;
    let writers = Writers::start(&h.storage);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (acked_before, count_before) = (writers.acked(), count(&h.storage).await);
    let report = take().await;
    let (attempted_after, count_after) = (writers.attempted(), count(&h.storage).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sequences = writers.stop().await;
    assert!(acked_before.iter().all(|n| *n > 0), "every writer wrote before the backup: {acked_before:?}");

    let b = plugin().open(&open_backup).unwrap_or_else(|e| panic!("open the backup {open_backup}: {e}"));
    let present = steps_present(&b).await;
    assert_prefixes(&present, &sequences, &acked_before, &attempted_after, "the backup");
    let n = present.len() as u64;
    assert!(
        count_before <= n && n <= count_after,
        "the backup holds {n} writer executions; {count_before} before it, {count_after} after"
    );
    assert_eq!(report.rows.get("executions").copied(), Some(seed.executions + n), "{report:?}");
    // The seed data, whole and equal.
    let mut copy = full_snapshot(&b).await;
    copy.executions.retain(|id, _| seed_snapshot.executions.contains_key(id));
    assert_same(&seed_snapshot, &copy, "the seed data in the backup");
    b.shutdown().await.unwrap();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backup_through_the_client_while_16_writers_write() {
    let h = common::sqlite().await;
    let dest = h.dir.path().join("backup.db");
    let params = BackupParams { destination: dest.display().to_string() };
    let open = json!({ "type": "sqlite", "sqlite": { "path": dest } });
    let dest2 = dest.clone();
    let report = backup_while_writing(
        &h,
        || async {
            // The integrity check runs on the file as the backup left it, before the plugin opens it.
            let r = h.storage.backup(&params).await.expect("backup");
            assert_eq!(integrity_check(&dest2), "ok", "PRAGMA integrity_check on the backup");
            r
        },
        open,
    )
    .await;
    assert_eq!(report.backend, "sqlite", "{report:?}");
    assert_eq!(report.destination, dest.display().to_string(), "{report:?}");
    assert_eq!(report.files, 1, "{report:?}");
    assert_eq!(report.bytes, std::fs::metadata(&dest).unwrap().len(), "{report:?}");
    assert_eq!(report.integrity.as_deref(), Some("ok"), "{report:?}");

    // A destination that exists is refused by name and left alone.
    let before = std::fs::read(&dest).unwrap();
    let e = h.storage.backup(&params).await.expect_err("a backup over an existing file");
    assert!(e.message.contains(&dest.display().to_string()), "the error names the destination: {e}");
    assert_eq!(std::fs::read(&dest).unwrap(), before, "the existing file is untouched");
    h.finish().await;
}

/// The CLI, another process, backs up the SQLite file the test process writes to (SQLite allows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backup_through_the_cli_while_16_writers_write() {
    let h = common::sqlite().await;
    let dest = h.dir.path().join("cli-backup.db");
    let config_file = cli::write_config(&h.dir.path().join("parallax.yaml"), &h.config);
    let open = json!({ "type": "sqlite", "sqlite": { "path": dest } });
    let dest_text = dest.display().to_string();
    let report = backup_while_writing(
        &h,
        || async {
            let mut cmd = cli::parallax(
                &["storage", "backup", "--destination", &dest_text],
                &config_file,
                h.dir.path(),
            );
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
            let (stdout, stderr) =
                (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "the backup CLI failed ({}):\n{stdout}\n{stderr}", out.status);
            assert_eq!(integrity_check(&dest), "ok", "PRAGMA integrity_check on the backup");
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("--output json is a backup report ({e}):\n{stdout}\n{stderr}"))
        },
        open,
    )
    .await;
    assert_eq!(report.backend, "sqlite", "{report:?}");
    assert_eq!(report.integrity.as_deref(), Some("ok"), "{report:?}");
    h.finish().await;
}

/// The file store's backup, taken through the object that writes, opens as a file store and is a prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_backup_while_16_writers_write() {
    let h = common::file::yaml_gz().await;
    let dest = h.dir.path().join("backup-store");
    let params = BackupParams { destination: dest.display().to_string() };
    let open = json!({ "type": "file", "file": { "basePath": dest, "format": "yaml", "compress": true } });
    let report =
        backup_while_writing(&h, || async { h.storage.backup(&params).await.expect("backup") }, open).await;
    assert_eq!(report.backend, "file", "{report:?}");
    assert!(report.files > 1 && report.bytes > 0, "{report:?}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_backup_is_refused_naming_pg_dump() {
    let h = common::postgres().await;
    let dest = h.dir.path().join("backup");
    let r = h.storage.backup(&BackupParams { destination: dest.display().to_string() }).await;
    assert_kind(r, ErrorKind::Unsupported, "pg_dump");
    assert!(!dest.exists(), "nothing written");
    h.finish().await;
}
