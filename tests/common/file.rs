//! The file store in tests: one factory per encoding (YAML or JSON, compressed or not), each on a fresh
//! directory. The file store is single-writer and versions its format rather than a schema, which the
//! harness flags say.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use parallax_storage_host::*;

use super::id_of;
use serde_json::json;

use super::{audit, new_execution, new_pattern, page, plugin, Harness};

pub fn config(dir: &Path, format: &str, compress: bool) -> serde_json::Value {
    json!({ "type": "file", "file": { "basePath": dir.join("store"), "format": format, "compress": compress } })
}

pub async fn open(format: &str, compress: bool) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), format, compress);
    let storage = plugin().open(&config).unwrap_or_else(|e| panic!("open file store: {e}"));
    let mut h = Harness::new(storage, config, dir);
    h.concurrent_instances = false;
    h.schema_migrations = false;
    h
}

pub async fn yaml() -> Harness {
    open("yaml", false).await
}

pub async fn json() -> Harness {
    open("json", false).await
}

pub async fn yaml_gz() -> Harness {
    open("yaml", true).await
}

pub async fn json_gz() -> Harness {
    open("json", true).await
}

/// The store's directory inside the harness's temp dir.
pub fn base(h: &Harness) -> std::path::PathBuf {
    h.dir.path().join("store")
}

/// Every file under `dir`, recursively, sorted.
pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The one file under `dir` whose name contains `needle` and ends with `suffix`.
pub fn find(dir: &Path, needle: &str, suffix: &str) -> std::path::PathBuf {
    let found: Vec<_> = files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(needle) && n.ends_with(suffix))
        })
        .collect();
    assert_eq!(found.len(), 1, "files matching {needle:?}…{suffix:?}: {found:?}");
    found[0].clone()
}

/// Plugin log events seen by this test process (the hook is installed on first use).
pub fn logs() -> &'static std::sync::Mutex<Vec<parallax_storage_host::logs::PluginLog>> {
    static LOGS: std::sync::OnceLock<std::sync::Mutex<Vec<parallax_storage_host::logs::PluginLog>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        parallax_storage_host::logs::set_hook(|l| {
            if let Some(logs) = LOGS.get() {
                logs.lock().unwrap_or_else(|p| p.into_inner()).push(l.clone());
            }
        });
        std::sync::Mutex::new(Vec::new())
    })
}

/// Whether a warning mentioning `needle` (in its message or fields) was logged.
pub fn warned(needle: &str) -> bool {
    logs().lock().unwrap().iter().any(|l| {
        l.level == parallax_storage_host::LogLevel::Warn
            && (l.message.contains(needle) || l.fields.iter().any(|(_, v)| v.contains(needle)))
    })
}

// ------------------------------------------------------------------ helpers of tests/file.rs

pub const CHILD_ROLE: &str = "PARALLAX_FILE_TEST_CHILD";
pub const CHILD_CONFIG: &str = "PARALLAX_FILE_TEST_CONFIG";

pub fn open_ok(config: &serde_json::Value) -> Storage {
    plugin().open(config).unwrap_or_else(|e| panic!("open: {e}"))
}

pub fn open_err(config: &serde_json::Value) -> Error {
    match plugin().open(config) {
        Ok(_) => panic!("expected the open to fail"),
        Err(e) => e,
    }
}

pub fn ext_of(p: &Path) -> String {
    let name = p.file_name().unwrap().to_str().unwrap();
    ["yaml.gz", "json.gz", "yaml", "json"].iter().find(|e| name.ends_with(*e)).unwrap_or(&"?").to_string()
}

pub fn event(payload: serde_json::Value) -> NewEvent {
    NewEvent { kind: EventKind::StepResult, payload: payload.into(), recorded_at: None }
}

/// A child process that is SIGKILLed when dropped, so a failing test never leaves one behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Re-runs this test binary as a child playing `role` on the store of `config`.
pub fn spawn_child(role: &str, config: &serde_json::Value) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_CONFIG, config.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-run the test binary");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test child_process ... " before the test's first line.
            let line = line.strip_prefix("test child_process ... ").map(str::to_string).unwrap_or(line);
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (ChildGuard(child), rx)
}

/// The next line starting with `prefix`, within `timeout`.
pub fn wait_for(rx: &mpsc::Receiver<String>, prefix: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("the child never printed {prefix:?}: {e}"),
        }
    }
}

/// Writes in a loop from `writers` tasks, printing each write once it is acknowledged (`ACK …` lines that
/// [`Acked::record`] reads).
pub async fn child_writer(s: Storage, writers: u32) {
    println!("READY {}", std::process::id());
    let tag = std::process::id().to_string();
    let mut tasks = Vec::new();
    for t in 0..writers {
        let (s, tag) = (s.clone(), tag.clone());
        tasks.push(tokio::spawn(async move {
            for i in 1u64.. {
                write_round(&s, t, i, &tag, &mut |line| println!("{line}")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Round `i` of writer `t`: an execution, and by turns an event, its completion, an audit batch and a pattern
/// (named with `tag`); `ack` gets an `ACK …` line for each acknowledged write. Stops at the first error.
pub async fn write_round(
    s: &Storage,
    t: u32,
    i: u64,
    tag: &str,
    ack: &mut (dyn FnMut(String) + Send),
) -> Result<(), Error> {
    let mut e = new_execution("crash", "1.0.0");
    e.input = Some(json!({ "task": t, "i": i, "text": "crash test" }).into());
    let id = s.create_execution(e).await?.id;
    ack(format!("ACK exec {id}"));
    if i % 2 == 0 {
        let ev = s.append_event(id, event(json!({ "i": i }))).await?;
        ack(format!("ACK event {id} {}", ev.seq));
    }
    if i % 3 == 0 {
        let c = ExecutionCompletion {
            status: ExecutionStatus::Completed,
            output: Some(json!({ "done": i }).into()),
            error: None,
            completed_at: None,
        };
        s.complete_execution(id, c).await?;
        ack(format!("ACK done {id}"));
    }
    if i % 4 == 0 {
        let batch: Vec<NewAuditEntry> = (0..(i % 7 + 1)).map(|_| audit("crash", "crasher")).collect();
        for a in s.append_audit(batch).await?.iter() {
            ack(format!("ACK audit {a}"));
        }
    }
    if i % 5 == 0 {
        let name = format!("crash-{tag}-{t}-{i}");
        s.put_pattern(new_pattern(&name, "1.0.0")).await?;
        ack(format!("ACK pattern {name}"));
    }
    Ok(())
}

/// A tiny xorshift generator: no dependency, reproducible from the printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default)]
pub struct Acked {
    pub executions: std::collections::HashSet<String>,
    pub done: std::collections::HashSet<String>,
    pub events: Vec<(String, i64)>,
    pub audit: std::collections::HashSet<String>,
    pub patterns: Vec<String>,
}

impl Acked {
    pub fn record(&mut self, line: &str) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["ACK", "exec", id] => {
                self.executions.insert(id.to_string());
            }
            ["ACK", "done", id] => {
                self.done.insert(id.to_string());
            }
            ["ACK", "event", id, seq] => self.events.push((id.to_string(), seq.parse().unwrap())),
            ["ACK", "audit", id] => {
                self.audit.insert(id.to_string());
            }
            ["ACK", "pattern", name] => self.patterns.push(name.to_string()),
            _ => {}
        }
    }

    /// Every acknowledged write is readable, with its acknowledged state.
    pub async fn verify(&self, s: &Storage) {
        for id in &self.executions {
            let e = s
                .get_execution(id_of(id))
                .await
                .unwrap_or_else(|e| panic!("acknowledged execution {id}: {e}"));
            if self.done.contains(id) {
                assert_eq!(e.status, ExecutionStatus::Completed, "{id}");
            }
        }
        for (id, seq) in &self.events {
            let events = s.list_events(id_of(id)).await.unwrap_or_else(|e| panic!("events of {id}: {e}"));
            assert!(events.iter().any(|e| e.seq == *seq), "acknowledged event {seq} of {id} is missing");
        }
        let q = AuditQuery { actor: Some("crasher".into()), ..Default::default() };
        let mut stored = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let pg = s.query_audit(q.clone(), page(1000, cursor.as_ref())).await.unwrap();
            stored.extend(pg.items.iter().map(|a| a.id.to_string()));
            match pg.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert!(
            self.audit.is_subset(&stored),
            "{} acknowledged audit entries are missing",
            self.audit.difference(&stored).count()
        );
        for name in &self.patterns {
            s.get_pattern(name, "1.0.0").await.unwrap_or_else(|e| panic!("acknowledged pattern {name}: {e}"));
        }
    }

    pub fn total(&self) -> usize {
        self.executions.len() + self.done.len() + self.events.len() + self.audit.len() + self.patterns.len()
    }
}

// ------------------------------------------------------------------ cleanup helpers

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// An execution started at `started_at` with `events` events, completed when `done`; its input holds `word`.
pub async fn execution_at(s: &Storage, started_at: i64, events: usize, done: bool, word: &str) -> Uuid {
    let e =
        NewExecution::new("retention", "1.0.0").input(json!({ "w": word })).started_at(super::at(started_at));
    let id = s.create_execution(e).await.unwrap().id;
    for i in 0..events {
        s.append_event(id, event(json!({ "i": i }))).await.unwrap();
    }
    if done {
        s.complete_execution(id, ExecutionCompletion::new(ExecutionStatus::Completed)).await.unwrap();
    }
    id
}

/// Every directory and file under `dir` with the bytes of each file (the lock file aside: it names its
/// holder), for before/after comparisons.
pub fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
                out.push((e.path(), None));
            } else if e.file_name() != ".lock" {
                out.push((e.path(), Some(std::fs::read(e.path()).unwrap())));
            }
        }
    }
    out.sort();
    out
}

/// Cleanup parameters: `target`, older than `age`.
pub fn cleanup_params(
    target: retention::CleanupTarget,
    age: &str,
    dry_run: bool,
) -> retention::CleanupParams {
    retention::CleanupParams {
        target,
        older_than: Some(age.into()),
        max_count: None,
        dry_run,
        include_unfinished: false,
        confirm_all: true,
    }
}
