//! Shared test harness: loads the *built* plugin cdylib through the host crate, as it ships.
#![allow(dead_code)]

pub mod archive;
pub mod cli;
pub mod compat;
pub mod exposition;
pub mod file;
pub mod pg;
pub mod proxy;
pub mod raw;
pub mod s3;
pub mod tamper;
pub mod tamper_file;
pub mod tamper_pg;
pub mod tamper_sqlite;
pub mod transfer;

use std::{path::PathBuf, sync::OnceLock};

use parallax_storage_host::*;
use serde_json::json;
use tempfile::TempDir;

/// `target/<profile>/`, found from this test executable (`target/<profile>/deps/<test>-<hash>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn built_library(stem: &str) -> PathBuf {
    let file = format!("{}{stem}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let path = target_dir().join(&file);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first with `cargo build --workspace` (the README's test command \
         `cargo build --workspace && cargo test --workspace` does; `cargo test` alone builds the plugin only as \
         an rlib)",
        path.display()
    );
    path
}

/// The newest modification time of the plugin's sources (src/, migrations/, plugin/abi/src).
fn newest_source() -> Option<std::time::SystemTime> {
    fn walk(dir: &std::path::Path, newest: &mut Option<std::time::SystemTime>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                *newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = None;
    for dir in ["src", "migrations", "plugin/abi/src"] {
        walk(&root.join(dir), &mut newest);
    }
    newest
}

/// The built plugin, refusing a library older than its sources (a `cargo test` without `cargo build`).
pub fn fresh_plugin_library() -> PathBuf {
    let lib = built_library("parallax_storage");
    let built = std::fs::metadata(&lib).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(source)) = (built, newest_source()) {
        assert!(
            built >= source,
            "{} is older than the plugin's sources: run `cargo build --workspace` (the README's test command \
             `cargo build --workspace && cargo test --workspace` does)",
            lib.display()
        );
    }
    lib
}

pub fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| Plugin::load(&fresh_plugin_library()).unwrap_or_else(|e| panic!("{e}")))
}

/// A storage instance plus whatever keeps its data alive (a temp dir, a database).
pub struct Harness {
    pub storage: Storage,
    pub config: serde_json::Value,
    pub dir: TempDir,
    /// The PostgreSQL database created for this test, dropped by [`Harness::finish`].
    pub pg_db: Option<String>,
    /// A second instance (another process, or another `open` in this one) may use the same data at the same
    /// time. False for the single-writer file store, which refuses the second opener instead.
    pub concurrent_instances: bool,
    /// Migrations are the SQL schema history (several steps, including the seed's 20240115 tags step). False
    /// for the file store, whose "migrations" are versions of its own format: one version so far.
    pub schema_migrations: bool,
    /// The harness's shared turn on [`pg::replica`] when its storage reads from the streaming replica
    /// ([`postgres_replica`]): no test pauses or stops the standby while this harness lives.
    pub replica_turn: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
}

impl Harness {
    pub fn new(storage: Storage, config: serde_json::Value, dir: TempDir) -> Harness {
        Harness {
            storage,
            config,
            dir,
            pg_db: None,
            concurrent_instances: true,
            schema_migrations: true,
            replica_turn: None,
        }
    }

    /// Lets another storage object see what this one (or any other) wrote: a no-op except where reads may
    /// come from a streaming replica ([`postgres_replica`]), which then waits until the standby has replayed
    /// everything the primary committed so far. Read-your-writes holds per storage object only, so a test
    /// that reads through a second object what the first wrote calls this in between, as an application
    /// must wait (or read from the primary) when it hands work from one storage object to another.
    pub async fn settle(&self) {
        if self.replica_turn.is_some() {
            pg::replica().wait_caught_up(std::time::Duration::from_secs(10)).await;
        }
    }

    /// Shuts the storage down and drops what the test created.
    pub async fn finish(self) {
        self.storage.shutdown().await.expect("shutdown");
        if let Some(db) = &self.pg_db {
            pg::server().drop_database(db).await;
        }
    }

    /// Opens another, independent instance on the same data.
    pub fn reopen(&self) -> Storage {
        plugin().open(&self.config).unwrap_or_else(|e| panic!("reopen: {e}"))
    }

    /// The backend's name as its config spells it: `sqlite`, `postgresql` or `file`.
    pub fn backend(&self) -> &str {
        self.config["type"].as_str().expect("the harness config names its type")
    }

    /// The harness's config with `extra` merged in (objects key by key, anything else replaced).
    pub fn config_with(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut config = self.config.clone();
        merge_json(&mut config, extra);
        config
    }

    /// Opens a second storage object on the same data with `extra` merged into the config (e.g.
    /// `{"metrics": {"statsInterval": "1s"}}`). Where only one instance may be open (the file store), the
    /// harness's own instance is shut down first; [`Harness::finish`] still works afterwards.
    pub async fn reopen_with(&self, extra: serde_json::Value) -> Storage {
        let config = self.config_with(extra);
        if !self.concurrent_instances {
            self.storage.shutdown().await.expect("shut the harness's instance down before reopening");
        }
        plugin().open(&config).unwrap_or_else(|e| panic!("open with {config}: {e}"))
    }
}

/// Merges `b` into `a`: objects key by key (recursively), anything else replaced.
pub fn merge_json(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge_json(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

pub fn sqlite_config(dir: &TempDir) -> serde_json::Value {
    json!({ "type": "sqlite", "sqlite": { "path": dir.path().join("parallax.db") } })
}

pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(&dir);
    let storage = plugin().open(&config).unwrap_or_else(|e| panic!("open sqlite: {e}"));
    Harness::new(storage, config, dir)
}

/// A fresh database on the test PostgreSQL server (see `pg.rs`).
pub async fn postgres() -> Harness {
    let server = pg::server();
    let db = server.fresh_database().await;
    let config = server.storage_config(&db);
    let storage = plugin().open(&config).unwrap_or_else(|e| panic!("open postgresql: {e}"));
    let mut h = Harness::new(storage, config, tempfile::tempdir().expect("tempdir"));
    h.pg_db = Some(db);
    h
}

/// [`postgres`] with plain reads going to the shared streaming replica (`readPreference: replica`): the
/// contract suite runs on it unchanged (read-your-writes per storage object; tests that read through a second
/// object call [`Harness::settle`] first). Holds a shared turn on the replica for the harness's life.
pub async fn postgres_replica() -> Harness {
    let replica = pg::replica();
    let turn = replica.shared().await;
    let server = pg::server();
    let db = server.fresh_database().await;
    let mut config = server.storage_config(&db);
    merge_json(&mut config, replica.server().as_replica("replica"));
    let storage = plugin().open(&config).unwrap_or_else(|e| panic!("open postgresql with a replica: {e}"));
    // The schema reaches the standby before the test's first read there, and the storage object's health check
    // has found the replica up, so the suite's reads that follow no write of their own are served by it.
    replica.wait_caught_up(std::time::Duration::from_secs(10)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let text = storage.metrics_text().await.expect("metrics");
        if text.lines().any(|l| l.starts_with("parallax_storage_replica_up{") && l.ends_with(" 1")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never came up for the contract suite:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut h = Harness::new(storage, config, tempfile::tempdir().expect("tempdir"));
    h.pg_db = Some(db);
    h.replica_turn = Some(turn);
    h
}

// ------------------------------------------------------------------ builders

pub fn new_pattern(name: &str, version: &str) -> NewPattern {
    NewPattern::new(name, version, json!({ "name": name, "steps": [{ "agent": "writer" }] }))
        .description(format!("{name} {version}"))
        .created_by("tester")
}

pub fn new_execution(pattern: &str, version: &str) -> NewExecution {
    NewExecution::new(pattern, version).input(json!({ "q": "hello" }))
}

pub fn audit(action: &str, actor: &str) -> NewAuditEntry {
    NewAuditEntry {
        actor: Some(actor.into()),
        resource_type: Some("pattern".into()),
        resource_id: Some("p1".into()),
        details: Some(json!({ "ok": true }).into()),
        ip_address: Some("10.1.2.3".into()),
        user_agent: Some("tests/1.0".into()),
        ..NewAuditEntry::new(action)
    }
}

pub fn page(limit: u32, cursor: Option<&String>) -> Page {
    Page { limit, cursor: cursor.cloned() }
}

/// The instant `micros` microseconds after the Unix epoch.
pub const fn at(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

/// The UUID spelt `text`.
#[track_caller]
pub fn id_of(text: &str) -> Uuid {
    text.parse().unwrap_or_else(|e| panic!("{text:?} is not a UUID: {e}"))
}

/// A JSON document from text the test knows is valid.
#[track_caller]
pub fn doc(text: &str) -> Json {
    Json::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
pub fn assert_kind<T: std::fmt::Debug>(r: Result<T, Error>, kind: ErrorKind, needle: &str) {
    match r {
        Ok(v) => panic!("expected a {kind:?} error mentioning {needle:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind, kind, "wrong kind for error: {e}");
            assert!(e.message.contains(needle), "error {e:?} does not mention {needle:?}");
        }
    }
}

/// Runs a future to completion on the current thread with nothing but `std`: no tokio, no other executor. The
/// host may await the plugin's futures on any executor (DESIGN.md); this is the plainest one.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// The lines of a Markdown file (path relative to the repository) between `<!-- tested: NAME -->` and
/// `<!-- /tested: NAME -->`, without the code fence: a documented command the tests run as written.
pub fn tested_block(file: &str, name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (open, close) = (format!("<!-- tested: {name} -->"), format!("<!-- /tested: {name} -->"));
    let start = text.find(&open).unwrap_or_else(|| panic!("{file} has no {open}")) + open.len();
    let len = text[start..].find(&close).unwrap_or_else(|| panic!("{file} has no {close}"));
    let block: Vec<&str> = text[start..start + len]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("```"))
        .collect();
    assert!(!block.is_empty(), "the {file} block {name} is empty");
    block.join("\n")
}
