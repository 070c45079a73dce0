//! Disk faults (the reliability suite; figures in RELIABILITY.md): a full disk for SQLite and the file store, and
//! a file store directory removed under a running process.
//!
//! Disk full: the writer runs in a child process (this test binary run again) inside a private mount namespace
//! (`unshare -m`, or `unshare -rm` for a user that is not root) on a 3 MiB tmpfs, so nothing outside it fills
//! up and the mount vanishes with the child. The child first writes a 512 KiB ballast file, then writes through
//! the plugin until a write fails; checks that the failure is a typed error naming the path and the cause, that
//! further writes fail the same way without a panic, that every acknowledged write is readable; deletes the
//! ballast and writes again; then shuts down, opens the store again and reads every acknowledged write back
//! (SQLite: `PRAGMA integrity_check` too). It reports each step on stdout for the parent to check.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{file::*, *};
use parallax_storage_host::*;
use serde_json::json;

const ROLE: &str = "PARALLAX_DISK_TEST_ROLE";
const DIR: &str = "PARALLAX_DISK_TEST_DIR";

/// Runs this binary's `disk_child` as `role` on a fresh 3 MiB tmpfs mounted at a new temporary directory, in a
/// mount namespace of its own; returns its stdout lines.
fn on_small_tmpfs(role: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let ns = if pg::is_root() { "-m" } else { "-rm" };
    let out = Command::new("unshare")
        .args([ns, "--propagation", "private", "--", "sh", "-c"])
        .arg("mount -t tmpfs -o size=3m parallax-disk-test \"$0\" && exec \"$@\"")
        .arg(dir.path())
        .arg(&exe)
        .args(["--exact", "disk_child", "--nocapture", "--test-threads", "1"])
        .env(ROLE, role)
        .env(DIR, dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("unshare (util-linux) is needed to mount a small tmpfs for the disk-full test: {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the disk-full child failed ({}). It needs `unshare {ns}` and `mount -t tmpfs` (root, or unprivileged user \
         namespaces: sysctl kernel.unprivileged_userns_clone=1).\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
        .lines()
        .map(|l| l.strip_prefix("test disk_child ... ").unwrap_or(l).to_string())
        .filter(|l| l.starts_with("DISK "))
        .collect()
}

/// The child: see the module's documentation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_child() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let dir = std::path::PathBuf::from(std::env::var(DIR).unwrap());
    if role == "file-permissions" {
        return permissions_child(&dir).await;
    }
    let (config, store_path) = match role.as_str() {
        "sqlite" => {
            let db = dir.join("parallax.db");
            (json!({ "type": "sqlite", "sqlite": { "path": db } }), db)
        }
        "file" => (config(&dir, "json", false), dir.join("store")),
        other => panic!("unknown role {other}"),
    };
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![7u8; 512 * 1024]).unwrap();
    let s = open_ok(&config);
    let text = "x".repeat(8 * 1024);
    let mut acked = Vec::new();
    let full = loop {
        let mut e = new_execution("disk", "1.0.0");
        e.input = Some(json!({ "text": text, "n": acked.len() }).into());
        match s.create_execution(e).await {
            Ok(x) => acked.push(x.id),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "3 MiB never filled up");
    };
    println!("DISK FULL {:?} after {} writes: {}", full.kind, acked.len(), full.message);
    // More writes while full: each fails the same way or (a small remainder of space) succeeds; none panics.
    for _ in 0..3 {
        let mut e = new_execution("disk", "1.0.0");
        e.input = Some(json!({ "text": text }).into());
        match s.create_execution(e).await {
            Ok(x) => {
                acked.push(x.id);
                println!("DISK AGAIN Ok");
            }
            Err(e) => println!("DISK AGAIN {:?}", e.kind),
        }
    }
    for id in &acked {
        s.get_execution(*id).await.unwrap_or_else(|e| panic!("acknowledged {id} while full: {e}"));
    }
    std::fs::remove_file(&ballast).unwrap();
    // Writing resumes once there is room (the first write may still meet the full state SQLite cached).
    let mut resumed = None;
    for _ in 0..20 {
        match s.create_execution(new_execution("disk", "1.0.0")).await {
            Ok(x) => {
                resumed = Some(x.id);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let resumed = resumed.expect("writing resumes once space is freed");
    acked.push(resumed);
    println!("DISK RESUMED");
    s.shutdown().await.unwrap();
    if role == "sqlite" {
        let conn = rusqlite::Connection::open(&store_path).unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        println!("DISK INTEGRITY {check}");
    }
    let s = open_ok(&config);
    for id in &acked {
        s.get_execution(*id).await.unwrap_or_else(|e| panic!("acknowledged {id} after reopening: {e}"));
    }
    s.shutdown().await.unwrap();
    println!("DISK VERIFIED {} at {}", acked.len(), store_path.display());
}

fn check_disk_full(lines: &[String], path_hint: &str, cause: &str) {
    let full = lines.iter().find(|l| l.starts_with("DISK FULL")).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(full.starts_with("DISK FULL Unavailable"), "a full disk is `unavailable`: {full}");
    assert!(
        full.contains(path_hint) && full.contains(cause),
        "the error names the path and the cause: {full}"
    );
    let again: Vec<&String> = lines.iter().filter(|l| l.starts_with("DISK AGAIN")).collect();
    assert_eq!(again.len(), 3, "{lines:?}");
    assert!(
        again.iter().all(|l| ["DISK AGAIN Unavailable", "DISK AGAIN Ok"].contains(&l.as_str())),
        "{again:?}"
    );
    assert!(lines.iter().any(|l| l == "DISK RESUMED"), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("DISK VERIFIED")), "{lines:?}");
    println!("{}", lines.join("\n"));
}

#[test]
fn sqlite_disk_full_is_a_clear_error_and_writing_resumes() {
    let lines = on_small_tmpfs("sqlite");
    check_disk_full(&lines, "parallax.db", "is full");
    assert!(lines.iter().any(|l| l == "DISK INTEGRITY ok"), "{lines:?}");
}

#[test]
fn file_store_disk_full_is_a_clear_error_and_writing_resumes() {
    let lines = on_small_tmpfs("file");
    check_disk_full(&lines, "/store", "No space left on device");
}

/// The child of the permissions test (run as an unprivileged user): a file store made read-only under the
/// running process (`chmod -R a-w`), then writable again.
async fn permissions_child(dir: &Path) {
    let cfg = config(dir, "json", false);
    let base = dir.join("store");
    let s = open_ok(&cfg);
    let mut acked = Vec::new();
    for _ in 0..5 {
        acked.push(s.create_execution(new_execution("perm", "1.0.0")).await.unwrap().id);
    }
    let chmod = |mode: &str| {
        let ok = Command::new("chmod").args(["-R", mode]).arg(&base).status().map(|s| s.success());
        assert!(ok.unwrap_or(false), "chmod -R {mode} {}", base.display());
    };
    chmod("a-w");
    let e = s.create_execution(new_execution("perm", "1.0.0")).await.unwrap_err();
    println!("DISK DENIED {:?}: {}", e.kind, e.message);
    for id in &acked {
        s.get_execution(*id).await.unwrap_or_else(|e| panic!("read {id} while read-only: {e}"));
    }
    println!("DISK READS OK");
    chmod("u+w");
    acked.push(s.create_execution(new_execution("perm", "1.0.0")).await.unwrap().id);
    println!("DISK RESUMED");
    s.shutdown().await.unwrap();
    let s = open_ok(&cfg);
    for id in &acked {
        s.get_execution(*id).await.unwrap_or_else(|e| panic!("acknowledged {id} after reopening: {e}"));
    }
    s.shutdown().await.unwrap();
    println!("DISK VERIFIED {}", acked.len());
}

/// Write permission taken away under a running file store (an operator's `chmod -R a-w`): writes fail with
/// `unavailable` naming the file and the cause, reads go on, nothing panics; given back, writing resumes and
/// everything acknowledged is there. Root ignores file permissions (`CAP_DAC_OVERRIDE`), so when the tests run as
/// root the child runs without capabilities (`setpriv --bounding-set=-all`): still root, still the owner of its
/// files, but bound by their permission bits.
#[test]
fn file_store_made_read_only_under_a_running_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if pg::is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set=-all", "--inh-caps=-all", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd
        .args(["--exact", "disk_child", "--nocapture", "--test-threads", "1"])
        .env(ROLE, "file-permissions")
        .env(DIR, &dir)
        .output()
        .expect("run the child (setpriv, from util-linux, when root)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = stdout
        .lines()
        .map(|l| l.strip_prefix("test disk_child ... ").unwrap_or(l).to_string())
        .filter(|l| l.starts_with("DISK "))
        .collect();
    let denied = lines.iter().find(|l| l.starts_with("DISK DENIED")).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(denied.starts_with("DISK DENIED Unavailable"), "{denied}");
    assert!(denied.contains("/store") && denied.contains("Permission denied"), "path and cause: {denied}");
    for step in ["DISK READS OK", "DISK RESUMED", "DISK VERIFIED 6"] {
        assert!(lines.iter().any(|l| l == step), "{step}: {lines:?}");
    }
    println!("{}", lines.join("\n"));
}

/// The file store's directory removed under a running process: writes and the health check fail with a clear
/// error naming the path, nothing panics, and shutting down works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_directory_removed_under_a_running_process() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "yaml", false);
    let s = open_ok(&cfg);
    let id = s.create_execution(new_execution("gone", "1.0.0")).await.unwrap().id;
    let base = dir.path().join("store");
    std::fs::remove_dir_all(&base).unwrap();
    let e = s.create_execution(new_execution("gone", "1.0.0")).await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Internal), "{e}");
    assert!(e.message.contains(&*base.to_string_lossy()), "the error names the store: {e}");
    let e = s.health().await.unwrap_err();
    assert!(e.message.contains(&*base.to_string_lossy()), "health names the store: {e}");
    // What the process already holds in memory is still answered; it is gone from disk.
    let _ = s.get_execution(id).await;
    s.shutdown().await.unwrap();
    assert!(!Path::new(&base).exists() || base.read_dir().unwrap().next().is_none());
}
