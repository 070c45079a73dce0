//! An archive run killed with SIGKILL at any step loses no row: every row is in the database or in a verified
//! archive, and the next run finishes the job without duplicating objects or rows. The archive runs are the
//! real CLI (`target/debug/parallax storage archive executions …`), each in its own process, paused at a named
//! step with `PARALLAX_ARCHIVE_PAUSE_AT=<step>` (it prints `archive paused at <step>` on stderr and waits) and
//! killed there; then at random moments. What was archived is read back from the destination without the
//! plugin (`common::archive`: gunzip, parse, SHA-256); what is verified is the plugin's `archive_verify`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use common::{archive as ar, cli::Running, *};
use parallax_storage_host::{
    archive::{ArchiveReport, VerifyParams},
    *,
};
use serde_json::{json, Value};

const DAY: i64 = 86_400_000_000;

fn now() -> i64 {
    Timestamp::now().as_micros()
}

/// The first instant (UTC) of the month `back` months before this one.
fn month_start(back: i32) -> i64 {
    use jiff::{tz::TimeZone, ToSpan};
    let today = jiff::Timestamp::now().to_zoned(TimeZone::UTC).date();
    let first = today.first_of_month().checked_sub(back.months()).unwrap();
    first.at(0, 0, 0, 0).to_zoned(TimeZone::UTC).unwrap().timestamp().as_microsecond()
}

/// A small deterministic generator (no extra crate), seeded per test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` characters from a 64-letter alphabet: about 6 bits of entropy per byte, so gzip cannot shrink them
    /// much (the mid-upload step needs several MiB of compressed data).
    fn noise(&mut self, len: usize) -> String {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(len);
        while out.len() < len {
            let mut x = self.next() ^ (self.next() << 31);
            for _ in 0..10 {
                out.push(ABC[(x & 63) as usize] as char);
                x >>= 6;
            }
        }
        out.truncate(len);
        out
    }
}

/// The backend under test: its plugin config (also written as the CLI's config file).
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    File,
    Postgres,
}

/// One database (or file store) with old final executions in two months, old unfinished ones and recent ones,
/// and a destination directory.
struct Setup {
    dir: tempfile::TempDir,
    config: Value,
    config_file: PathBuf,
    root: PathBuf,
    dest: String,
    /// Every execution id.
    all: BTreeSet<String>,
    /// The ids an archive of `--older-than 30d` selects (old and final).
    selected: BTreeSet<String>,
}

impl Setup {
    /// `old` old completed executions (in `months` months: three months back, and two when `months` is 2), each
    /// with `events` events and an input of `noise` incompressible bytes; 5 old running ones; 10 recent ones.
    async fn new(
        backend: Backend,
        (old, months, events, noise): (usize, usize, usize, usize),
        storage_archive: Option<Value>,
    ) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut config = match backend {
            Backend::Sqlite => {
                json!({ "type": "sqlite", "sqlite": { "path": dir.path().join("parallax.db") } })
            }
            Backend::File => common::file::config(dir.path(), "json", false),
            Backend::Postgres => {
                let server = common::pg::server();
                server.storage_config(&server.fresh_database().await)
            }
        };
        if let Some(a) = storage_archive {
            config["archive"] = a;
        }
        let config_file = dir.path().join("parallax.config.yaml");
        // JSON is YAML.
        std::fs::write(&config_file, json!({ "storage": config }).to_string()).unwrap();
        let root = dir.path().join("archive");
        let dest = format!("{}/", root.display());
        let s = plugin().open(&config).unwrap_or_else(|e| panic!("open {backend:?}: {e}"));
        let mut rng = Rng(now() as u64 | 1);
        let (m3, m2) = (month_start(3), month_start(2));
        let mut selected = BTreeSet::new();
        let mut all = BTreeSet::new();
        let mut tasks = Vec::new();
        let chunks = 4;
        for t in 0..chunks {
            let s = s.clone();
            let inputs: Vec<String> = (0..old.div_ceil(chunks)).map(|_| rng.noise(noise)).collect();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for (i, text) in inputs.into_iter().enumerate() {
                    let n = t + i * chunks;
                    if n >= old {
                        break;
                    }
                    let base = if n % months == 0 { m3 } else { m2 };
                    let started = base + DAY + n as i64 * 1_000_000;
                    ids.push(execution(&s, started, true, &text, events, n).await);
                }
                ids
            }));
        }
        for t in tasks {
            for id in t.await.unwrap() {
                selected.insert(id.clone());
                all.insert(id);
            }
        }
        for i in 0..5 {
            all.insert(execution(&s, m3 + 3 * DAY + i, false, "stuck", 1, i as usize).await);
        }
        for i in 0..10 {
            all.insert(execution(&s, now() - DAY - i, true, "recent", 1, i as usize).await);
        }
        s.shutdown().await.unwrap();
        Setup { dir, config, config_file, root, dest, all, selected }
    }

    /// `parallax --output json storage archive executions --older-than 30d --destination <dest>`, with the
    /// pause step set or not.
    fn archive_cmd(&self, pause: Option<&str>) -> Command {
        self.archive_cmd_to(&self.dest, pause)
    }

    /// The same to another destination.
    fn archive_cmd_to(&self, dest: &str, pause: Option<&str>) -> Command {
        let mut c = common::cli::parallax(
            &["storage", "archive", "executions", "--older-than", "30d", "--destination", dest],
            &self.config_file,
            self.dir.path(),
        );
        if let Some(step) = pause {
            c.env(PAUSE_ENV, step);
        }
        c
    }

    /// Archives somewhere else (`root` is where its objects can be read as files).
    fn with_destination(mut self, root: PathBuf, dest: String) -> Setup {
        self.root = root;
        self.dest = dest;
        self
    }

    fn open(&self) -> Storage {
        plugin().open(&self.config).unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// The ids in the database, the ids in archives whose manifest verifies (by manifest), and the verify report.
    async fn state(&self) -> State {
        let s = self.open();
        let in_db: BTreeSet<String> = s
            .executions(ExecutionFilter::default(), 500)
            .collect()
            .await
            .unwrap()
            .iter()
            .map(|e| e.id.to_string())
            .collect();
        let mut archived = BTreeMap::new();
        // Verify refuses a source without any manifest (NotFound): then nothing is archived yet.
        let verify = match s.archive_verify(&VerifyParams { source: self.dest.clone() }).await {
            Err(e) if e.kind == ErrorKind::NotFound => {
                assert!(
                    ar::manifests(&self.root).is_empty(),
                    "verify found no manifest, but there is one: {e}"
                );
                None
            }
            Err(e) => panic!("verify {}: {e}", self.dest),
            Ok(v) => Some(v),
        };
        let verify = if let Some(v) = verify {
            let manifests = ar::manifests(&self.root);
            for m in &v.manifests {
                if m.ok {
                    let doc =
                        manifests.get(&m.key).unwrap_or_else(|| panic!("{} verified but not on disk", m.key));
                    archived.insert(m.key.clone(), ar::manifest_ids(&self.root, doc));
                }
            }
            Some(v)
        } else {
            None
        };
        let runs = s.retention_status().await.unwrap().runs;
        s.shutdown().await.unwrap();
        State { in_db, archived, verify, runs }
    }
}

const PAUSE_ENV: &str = "PARALLAX_ARCHIVE_PAUSE_AT";

struct State {
    in_db: BTreeSet<String>,
    archived: BTreeMap<String, Vec<String>>,
    verify: Option<parallax_storage_host::archive::VerifyReport>,
    runs: Vec<parallax_storage_host::retention::RunRecord>,
}

impl State {
    fn archived_ids(&self) -> BTreeSet<String> {
        self.archived.values().flatten().cloned().collect()
    }

    /// No row lost: every original id is in the database or in a verified archive.
    #[track_caller]
    fn assert_nothing_lost(&self, setup: &Setup, when: &str) {
        let archived = self.archived_ids();
        let lost: Vec<&String> =
            setup.all.iter().filter(|id| !self.in_db.contains(*id) && !archived.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "{when}: {} rows are neither in the database nor in a verified archive: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        let unselected_gone: Vec<&String> =
            setup.all.difference(&setup.selected).filter(|id| !self.in_db.contains(*id)).collect();
        assert!(
            unselected_gone.is_empty(),
            "{when}: rows that were not selected left the database: {unselected_gone:?}"
        );
        let extra: BTreeSet<&String> = archived.iter().filter(|id| !setup.selected.contains(*id)).collect();
        assert!(extra.is_empty(), "{when}: archived rows that were not selected: {extra:?}");
    }

    /// The job is done: every selected row in exactly one verified manifest and not in the database, every other
    /// row in the database, every manifest verifies, no orphan object, no object that no manifest names.
    #[track_caller]
    fn assert_finished(&self, setup: &Setup, when: &str) {
        self.assert_nothing_lost(setup, when);
        let v = self.verify.as_ref().unwrap_or_else(|| panic!("{when}: no archive was written"));
        assert!(v.ok, "{when}: verify: {v:?}");
        assert!(v.orphans.is_empty(), "{when}: orphans left: {:?}", v.orphans);
        let mut seen = BTreeMap::new();
        for (m, ids) in &self.archived {
            for id in ids {
                if let Some(other) = seen.insert(id.clone(), m.clone()) {
                    panic!("{when}: {id} is in two manifests, {other} and {m}");
                }
            }
        }
        assert_eq!(
            self.archived_ids(),
            setup.selected,
            "{when}: the archives hold exactly the selected rows"
        );
        let expected_db: BTreeSet<String> = setup.all.difference(&setup.selected).cloned().collect();
        assert_eq!(self.in_db, expected_db, "{when}: the database holds exactly the rows not selected");
        let listed: BTreeSet<String> =
            ar::manifests(&setup.root).values().flat_map(ar::manifest_keys).collect();
        assert_eq!(
            ar::object_files(&setup.root),
            listed,
            "{when}: objects on disk are exactly the manifests' objects"
        );
        assert!(
            self.runs.iter().all(|r| r.status != "running"),
            "{when}: a run is still marked running: {:?}",
            self.runs
        );
        assert!(
            self.runs.iter().filter_map(|r| r.archive.as_ref()).all(|a| a.phase == "done"),
            "{when}: an archive run is not done: {:?}",
            self.runs
        );
    }
}

/// Runs the archive to completion and returns its report.
#[track_caller]
fn finish(setup: &Setup) -> ArchiveReport {
    let out = setup.archive_cmd(None).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the re-run failed ({}):\n{stdout}\n{stderr}", out.status);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--output json is an archive report ({e}):\n{stdout}"))
}

/// Kills an archive run paused at `step`, checks that nothing is lost and what the step promises, re-runs it and
/// checks that the job is finished exactly once.
async fn kill_at(setup: Setup, step: &str) {
    let mut run = Running::spawn(setup.archive_cmd(Some(step)));
    run.wait_for(&format!("archive paused at {step}"), Duration::from_secs(120));
    run.kill();

    let st = setup.state().await;
    st.assert_nothing_lost(&setup, &format!("killed at {step}"));
    let killed = st
        .runs
        .iter()
        .find(|r| r.archive.is_some())
        .unwrap_or_else(|| panic!("{step}: the killed run is recorded: {:?}", st.runs));
    assert_eq!(killed.status, "running", "{step}: {killed:?}");
    let phase = killed.archive.as_ref().unwrap().phase.clone();
    let objects = ar::object_files(&setup.root);
    let manifests = ar::manifests(&setup.root);
    match step {
        "before-upload" | "mid-upload" => {
            assert_eq!(phase, "writing", "{step}");
            assert!(manifests.is_empty(), "{step}: {manifests:?}");
            assert_eq!(st.in_db, setup.all, "{step}: nothing deleted");
            if step == "before-upload" {
                assert!(objects.is_empty(), "{step}: {objects:?}");
            }
        }
        "after-upload" => {
            assert_eq!(phase, "writing", "{step}");
            assert!(manifests.is_empty(), "{step}: {manifests:?}");
            assert!(!objects.is_empty(), "{step}: the objects are stored");
            // Verify has no manifest to check: these objects are orphans the next run removes.
            assert!(st.verify.is_none(), "{step}: {:?}", st.verify);
            assert_eq!(st.in_db, setup.all, "{step}: nothing deleted");
        }
        "after-manifest" => {
            assert_eq!(phase, "stored", "{step}");
            assert_eq!(manifests.len(), 1, "{step}");
            assert_eq!(
                st.archived_ids(),
                setup.selected,
                "{step}: the manifest verifies and holds every selected row"
            );
            assert_eq!(st.in_db, setup.all, "{step}: nothing deleted yet");
        }
        "mid-delete" => {
            assert_eq!(phase, "deleting", "{step}");
            assert_eq!(st.archived_ids(), setup.selected, "{step}");
            let gone = setup.all.len() - st.in_db.len();
            assert!(
                gone > 0 && gone < setup.selected.len(),
                "{step}: part of the rows deleted ({gone} of {})",
                setup.selected.len()
            );
        }
        other => panic!("unknown step {other}"),
    }

    let r = finish(&setup);
    assert_eq!(r.resumed.len(), 1, "{step}: the re-run resumes the killed run: {r:?}");
    let resumed = &r.resumed[0];
    assert_eq!(resumed.run_id, killed.id, "{step}: {r:?}");
    match step {
        "before-upload" | "mid-upload" | "after-upload" => {
            assert_eq!(resumed.action, "cleared", "{step}: {r:?}");
            assert_eq!(resumed.objects_removed as usize, objects.len(), "{step}: {r:?}");
            assert_eq!(
                r.rows.get("executions").copied(),
                Some(setup.selected.len() as u64),
                "{step}: archived anew: {r:?}"
            );
        }
        _ => {
            assert_eq!(resumed.action, "finished", "{step}: {r:?}");
            assert_eq!(
                r.rows.get("executions").copied().unwrap_or(0),
                0,
                "{step}: nothing left to archive: {r:?}"
            );
            assert!(r.manifest.is_none() && r.objects.is_empty(), "{step}: no new objects: {r:?}");
        }
    }
    let st = setup.state().await;
    st.assert_finished(&setup, &format!("re-run after a kill at {step}"));
    assert!(st.runs.iter().any(|x| x.id == killed.id && x.status != "running"), "{step}: {:?}", st.runs);
    // And once more: nothing to do, nothing resumed, nothing written.
    let files = ar::all_files(&setup.root);
    let r = finish(&setup);
    assert!(r.resumed.is_empty() && r.manifest.is_none(), "{step}: {r:?}");
    assert_eq!(ar::all_files(&setup.root), files, "{step}");
    if let Some(db) = setup.config["postgresql"]["database"].as_str() {
        common::pg::server().drop_database(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_before_upload() {
    kill_at(Setup::new(Backend::Sqlite, (120, 2, 2, 64), None).await, "before-upload").await;
}

/// More compressed data than one part (the default partSize is 8 MiB), so the object goes up in parts and the
/// run is killed with one part stored and the upload not completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_upload() {
    kill_at(Setup::new(Backend::Sqlite, (700, 1, 1, 20_000), None).await, "mid-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_after_upload() {
    kill_at(Setup::new(Backend::Sqlite, (120, 2, 2, 64), None).await, "after-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_after_manifest() {
    kill_at(Setup::new(Backend::Sqlite, (120, 2, 2, 64), None).await, "after-manifest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_delete() {
    kill_at(Setup::new(Backend::Sqlite, (120, 2, 2, 64), None).await, "mid-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_killed_before_upload() {
    kill_at(Setup::new(Backend::File, (60, 2, 2, 64), None).await, "before-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_killed_after_manifest() {
    kill_at(Setup::new(Backend::File, (60, 2, 2, 64), None).await, "after-manifest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_killed_after_upload() {
    kill_at(Setup::new(Backend::Postgres, (120, 2, 2, 64), None).await, "after-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_killed_after_manifest() {
    kill_at(Setup::new(Backend::Postgres, (120, 2, 2, 64), None).await, "after-manifest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_killed_mid_delete() {
    kill_at(Setup::new(Backend::Postgres, (120, 2, 2, 64), None).await, "mid-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_killed_after_upload() {
    kill_at(Setup::new(Backend::File, (60, 2, 2, 64), None).await, "after-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_killed_mid_delete() {
    kill_at(Setup::new(Backend::File, (60, 2, 2, 64), None).await, "mid-delete").await;
}

/// Kills at random moments (a few trials, each after the previous kill), checking after each that nothing is
/// lost; then a last run finishes the job exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_at_random_moments() {
    let setup = Setup::new(Backend::Sqlite, (3_000, 2, 2, 200), None).await;
    // How long a whole run takes here (with --keep, to another destination, so nothing changes): the kills
    // land within that time, most of them while the run works.
    let calibration = format!("{}/", setup.dir.path().join("calibration").display());
    let started = Instant::now();
    let out = setup.archive_cmd_to(&calibration, None).arg("--keep").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let whole = started.elapsed().as_millis() as u64;
    let mut rng = Rng(now() as u64 | 1);
    let mut phases = Vec::new();
    for trial in 0..6 {
        let mut run = Running::spawn(setup.archive_cmd(None));
        let wait = if trial == 0 {
            // The first kill lands while objects are being written, for sure.
            let t = Instant::now();
            while ar::all_files(&setup.root).is_empty() {
                assert!(run.child.try_wait().unwrap().is_none(), "the run ended before writing anything");
                assert!(t.elapsed() < Duration::from_secs(120), "the run wrote nothing in 120 s");
                std::thread::sleep(Duration::from_millis(2));
            }
            t.elapsed().as_millis() as u64
        } else if trial == 1 {
            // The second soon after its manifest is stored: while (or just before) rows are deleted.
            let t = Instant::now();
            while ar::manifests(&setup.root).is_empty() {
                if run.child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(120), "no manifest in 120 s");
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            t.elapsed().as_millis() as u64
        } else {
            let wait = 20 + rng.below(whole * 3 / 2);
            std::thread::sleep(Duration::from_millis(wait));
            wait
        };
        run.kill();
        let st = setup.state().await;
        let phase = st
            .runs
            .iter()
            .find(|r| r.status == "running")
            .and_then(|r| r.archive.as_ref())
            .map(|a| a.phase.clone());
        eprintln!(
            "trial {trial}: killed after {wait} of ~{whole} ms in phase {phase:?}; {} rows in the database, {} in {} \
             verified manifests",
            st.in_db.len(),
            st.archived_ids().len(),
            st.archived.len()
        );
        st.assert_nothing_lost(&setup, &format!("random kill {trial} after {wait} ms"));
        phases.push(phase);
    }
    assert!(phases.iter().any(Option::is_some), "no kill landed while a run was working: {phases:?}");
    finish(&setup);
    setup.state().await.assert_finished(&setup, "the run after the random kills");
}

/// An execution started at `started_at` with an input holding `text`, `events` events, completed when `done`.
async fn execution(s: &Storage, started_at: i64, done: bool, text: &str, events: usize, n: usize) -> String {
    let mut e = new_execution("archived", "1.0.0");
    e.started_at = Some(at(started_at));
    e.input = Some(json!({ "text": text, "n": n }).into());
    e.status = ExecutionStatus::Running;
    let e = s.create_execution(e).await.unwrap();
    for i in 0..events {
        let ev = NewEvent {
            kind: EventKind::StepResult,
            payload: json!({ "i": i }).into(),
            recorded_at: Some(at(started_at + 1 + i as i64)),
        };
        s.append_event(e.id, ev).await.unwrap();
    }
    if done {
        let c = ExecutionCompletion {
            status: ExecutionStatus::Completed,
            output: None,
            error: None,
            completed_at: Some(at(started_at + 5_000_000)),
        };
        s.complete_execution(e.id, c).await.unwrap();
    }
    e.id.to_string()
}

/// The multipart path on the real S3 server: parts of 5 MiB, more than one part of compressed data, killed
/// with one part stored and the upload not completed (the part files are on the server); the re-run clears the
/// killed run and archives everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_killed_mid_upload() {
    let s3 = common::s3::S3Server::start();
    let mut section = s3.archive_config();
    section["partSize"] = json!(5 << 20);
    section["timeout"] = json!(30_000);
    let setup = Setup::new(Backend::Sqlite, (500, 1, 1, 20_000), Some(section)).await;
    let root = s3.root().join(common::s3::BUCKET).join("kill");
    let setup = setup.with_destination(root, s3.url("kill"));
    let mut run = Running::spawn(setup.archive_cmd(Some("mid-upload")));
    run.wait_for("archive paused at mid-upload", Duration::from_secs(180));
    assert!(!s3.upload_parts().is_empty(), "a part of the upload is stored on the server");
    run.kill();
    let st = setup.state().await;
    st.assert_nothing_lost(&setup, "killed mid-upload on S3");
    assert!(ar::object_files(&setup.root).is_empty(), "no object is visible before its upload completes");
    assert_eq!(st.in_db, setup.all);
    let r = finish(&setup);
    assert_eq!(r.resumed.len(), 1, "{r:?}");
    assert_eq!(r.resumed[0].action, "cleared", "{r:?}");
    assert_eq!(r.rows.get("executions").copied(), Some(setup.selected.len() as u64), "{r:?}");
    assert!(r.objects.iter().any(|o| o.size > 5 << 20), "an object bigger than a part: {r:?}");
    setup.state().await.assert_finished(&setup, "re-run after a kill mid-upload on S3");
}

/// An old execution that was running when the run selected its rows, and finishes (with an old completion time)
/// while the run is deleting, sits inside the archived time range but is not in the archive: it must not be
/// deleted with the archived rows (deletion is by archived id, never by range). The re-run archives it then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_row_finished_during_the_delete_is_archived_not_lost() {
    let mut setup = Setup::new(Backend::Sqlite, (120, 2, 2, 64), None).await;
    let mut run = Running::spawn(setup.archive_cmd(Some("mid-delete")));
    run.wait_for("archive paused at mid-delete", Duration::from_secs(120));
    let s = setup.open();
    let stuck = s.executions(ExecutionFilter::default().pattern("archived"), 500).collect().await.unwrap();
    let late = stuck
        .iter()
        .find(|e| e.status == ExecutionStatus::Running)
        .expect("an old running execution")
        .clone();
    let done = ExecutionCompletion {
        status: ExecutionStatus::Completed,
        output: None,
        error: None,
        completed_at: Some(at(late.started_at.as_micros() + 1_000_000)),
    };
    s.complete_execution(late.id, done).await.unwrap();
    s.shutdown().await.unwrap();
    run.kill();

    let st = setup.state().await;
    st.assert_nothing_lost(&setup, "killed mid-delete with a row finished meanwhile");
    assert!(st.in_db.contains(&late.id.to_string()), "the late row was deleted without being archived");
    let r = finish(&setup);
    assert_eq!(r.resumed.first().map(|x| x.action.as_str()), Some("finished"), "{r:?}");
    assert_eq!(r.rows.get("executions"), Some(&1), "the re-run archives the late row: {r:?}");
    setup.selected.insert(late.id.to_string());
    setup.state().await.assert_finished(&setup, "re-run after the late row finished");
}

// ------------------------------------------------------------------ audit entries and their chain (issue 17)

/// `old` audit entries three months back (in time order, as the chain has them) and 20 recent ones; returns the
/// old ids and every id.
async fn audit_setup(
    backend: Backend,
    old: usize,
) -> (tempfile::TempDir, Value, PathBuf, BTreeSet<String>, BTreeSet<String>) {
    let dir = tempfile::tempdir().unwrap();
    let config = match backend {
        Backend::Sqlite => json!({ "type": "sqlite", "sqlite": { "path": dir.path().join("parallax.db") } }),
        Backend::File => common::file::config(dir.path(), "json", false),
        Backend::Postgres => {
            let server = common::pg::server();
            server.storage_config(&server.fresh_database().await)
        }
    };
    let config_file = dir.path().join("parallax.config.yaml");
    std::fs::write(&config_file, json!({ "storage": config }).to_string()).unwrap();
    let s = plugin().open(&config).unwrap_or_else(|e| panic!("open {backend:?}: {e}"));
    let base = month_start(3) + DAY;
    let entry = |at: i64, n: usize| NewAuditEntry {
        timestamp: Some(Timestamp::from_micros(at)),
        details: Some(json!({ "n": n }).into()),
        ..audit("pattern.update", "kill-test")
    };
    let mut selected = BTreeSet::new();
    for chunk in (0..old).collect::<Vec<_>>().chunks(500) {
        let ids =
            s.append_audit(chunk.iter().map(|&n| entry(base + n as i64 * 1_000_000, n)).collect()).await;
        selected.extend(ids.unwrap().into_iter().map(|u| u.to_string()));
    }
    let recent = s.append_audit((0..20).map(|n| entry(now() - DAY + n as i64, n)).collect()).await.unwrap();
    let mut all = selected.clone();
    all.extend(recent.into_iter().map(|u| u.to_string()));
    s.shutdown().await.unwrap();
    (dir, config, config_file, selected, all)
}

/// The audit ids in the store, and its chain's verify report.
async fn audit_state(config: &Value) -> (BTreeSet<String>, parallax_storage_host::audit::AuditVerifyReport) {
    let s = plugin().open(config).unwrap();
    let ids = s
        .audit_entries(AuditQuery::default(), 500)
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|a| a.id.to_string())
        .collect();
    let report = s.audit_verify(&Default::default()).await.unwrap();
    s.shutdown().await.unwrap();
    (ids, report)
}

/// An audit archive killed after its manifest and mid-delete: the checkpoint is recorded before the first delete,
/// so the chain of what remains verifies at every point (entries at or below the checkpoint still present are
/// awaiting removal, not breaks); every entry is in the database or in the verified archive, whose audit segment
/// verifies on its own; the re-run finishes the delete and the chain still verifies.
async fn audit_kill_at(backend: Backend, step: &str) {
    const OLD: usize = 2_500; // three delete batches of 1,000
    let (dir, config, config_file, selected, all) = audit_setup(backend, OLD).await;
    let root = dir.path().join("archive");
    let dest = format!("{}/", root.display());
    let cmd = |pause: Option<&str>| {
        let mut c = common::cli::parallax(
            &["storage", "archive", "audit-logs", "--older-than", "30d", "--destination", &dest],
            &config_file,
            dir.path(),
        );
        if let Some(step) = pause {
            c.env(PAUSE_ENV, step);
        }
        c
    };
    let mut run = Running::spawn(cmd(Some(step)));
    run.wait_for(&format!("archive paused at {step}"), Duration::from_secs(120));
    run.kill();

    let (in_db, report) = audit_state(&config).await;
    let archived: BTreeSet<String> =
        ar::manifests(&root).values().flat_map(|m| ar::manifest_ids(&root, m)).collect();
    let lost: Vec<&String> =
        all.iter().filter(|id| !in_db.contains(*id) && !archived.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{backend:?} {step}: {} entries lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert_eq!(archived, selected, "{backend:?} {step}: the manifest holds every old entry");
    assert!(report.ok, "{backend:?} {step}: the chain verifies after the kill: {report:?}");
    match step {
        "after-manifest" => assert_eq!(in_db, all, "{backend:?} {step}: nothing deleted yet"),
        "mid-delete" => {
            let gone = all.len() - in_db.len();
            assert!(gone > 0 && gone < OLD, "{backend:?} {step}: part deleted ({gone} of {OLD})");
            let cp = report.checkpoint.as_ref().expect("the checkpoint is recorded before the first delete");
            assert_eq!(cp.removed as usize, OLD, "{backend:?} {step}: {cp:?}");
            assert_eq!(report.awaiting_removal as usize, OLD - gone, "{backend:?} {step}: {report:?}");
            assert_eq!(report.checked, 20, "{backend:?} {step}: the kept chain is the recent entries");
        }
        other => panic!("unknown step {other}"),
    }

    let out = cmd(None).output().unwrap();
    assert!(
        out.status.success(),
        "{backend:?} {step}: the re-run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (in_db, report) = audit_state(&config).await;
    let recent: BTreeSet<String> = all.difference(&selected).cloned().collect();
    assert_eq!(in_db, recent, "{backend:?} {step}: the re-run finished the delete");
    assert!(
        report.ok && report.awaiting_removal == 0 && report.checked == 20,
        "{backend:?} {step}: {report:?}"
    );
    assert_eq!(report.checkpoint.as_ref().map(|c| c.removed), Some(OLD as u64), "{backend:?} {step}");
    let s = plugin().open(&config).unwrap();
    let v = s.archive_verify(&VerifyParams { source: dest.clone() }).await.unwrap();
    assert!(v.ok, "{backend:?} {step}: the archived audit segment verifies: {v:?}");
    s.shutdown().await.unwrap();
    if let Some(db) = config["postgresql"]["database"].as_str() {
        common::pg::server().drop_database(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_audit_archive_killed_mid_delete_keeps_the_chain_verifiable() {
    audit_kill_at(Backend::Sqlite, "mid-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_audit_archive_killed_mid_delete_keeps_the_chain_verifiable() {
    audit_kill_at(Backend::Postgres, "mid-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_audit_archive_killed_mid_delete_keeps_the_chain_verifiable() {
    audit_kill_at(Backend::File, "mid-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_audit_archive_killed_after_manifest_keeps_the_chain_verifiable() {
    audit_kill_at(Backend::Sqlite, "after-manifest").await;
}
