//! Who can read the data: whatever the process umask, everything the plugin creates on a local disk is
//! owner-only (`0600` files, `0700` directories) — the SQLite database with its `-wal` and `-shm`, the file
//! store's tree, a backup, a local export (its files, and its root or, below a root others may enter, its table
//! directories) —
//! and a store other local users can read is named, with the fix, in the health check's warnings (which
//! `parallax storage test-connection` prints). PostgreSQL keeps no local files of ours: only the export part
//! applies there, and its health names no such file.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use parallax_storage_host::transfer::BackupParams;

use crate::common::{archive as ar, transfer::*, *};

const EXPOSED: &str = "accessible to other local users";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Every file and directory at or below `root` (a file alone when `root` is one).
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if root.is_dir() {
        for e in std::fs::read_dir(root).unwrap() {
            out.extend(tree(&e.unwrap().path()));
        }
    }
    out
}

/// Each path is owner-only: `0600` for a file, `0700` for a directory.
fn assert_owner_only(paths: &[PathBuf], what: &str) {
    assert!(!paths.is_empty(), "{what}: nothing to check");
    for p in paths {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{what}: {} has mode {:04o}, want {want:04o}", p.display(), mode(p));
    }
}

/// The store's own local files, by backend: none for PostgreSQL (the server's data directory is its own).
fn store_paths(h: &Harness) -> Vec<PathBuf> {
    match h.backend() {
        "sqlite" => {
            let db = PathBuf::from(h.config["sqlite"]["path"].as_str().unwrap());
            let with = |s: &str| PathBuf::from(format!("{}{s}", db.display()));
            let mut files = vec![db.clone(), with("-wal"), with("-shm")];
            files.retain(|p| p.exists());
            assert!(files.len() == 3, "the SQLite store in WAL mode has its -wal and -shm files: {files:?}");
            files
        }
        "file" => tree(Path::new(h.config["file"]["basePath"].as_str().unwrap())),
        _ => Vec::new(),
    }
}

pub async fn access_local_files_are_owner_only(h: &Harness) {
    // A common default umask: without the plugin's own modes, new files would be 0644 and directories 0755.
    // SAFETY: umask only sets this process's file creation mask.
    unsafe { libc::umask(0o022) };
    populate_everything(&h.storage).await;
    let store = store_paths(h);
    if h.backend() != "postgresql" {
        assert_owner_only(&store, "the store");
    }
    let health = h.storage.health().await.unwrap();
    assert!(
        !health.warnings.iter().any(|w| w.contains(EXPOSED)),
        "an owner-only store: {:?}",
        health.warnings
    );

    // An export into a new directory: its root is created 0700 (object_store writes the objects below it).
    let (root, dest) = ar::destination(h, "export");
    h.storage.export(&export_to(&dest)).await.expect("export");
    assert_eq!(mode(&root), 0o700, "the export's new root {}", root.display());
    let files: Vec<PathBuf> = tree(&root).into_iter().filter(|p| p.is_file()).collect();
    assert_owner_only(&files, "the export's objects and manifests");
    // Into an existing directory others may enter: the table directories are made 0700 first.
    let shared = h.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.storage.export(&export_to(&format!("{}/", shared.display()))).await.expect("export into a shared dir");
    for table in ["patterns", "executions", "audit_logs"] {
        assert_eq!(mode(&shared.join(table)), 0o700, "{table}/ below a directory others may enter");
    }

    if h.backend() != "postgresql" {
        // A backup: the SQLite copy, or the file store's tree.
        let backup = h.dir.path().join("backup");
        let params = BackupParams { destination: backup.display().to_string() };
        h.storage.backup(&params).await.expect("backup");
        assert_owner_only(&tree(&backup), "the backup");

        // Widened by hand: the health check names each file others can read, with the chmod that fixes it.
        let widened: Vec<&PathBuf> = match h.backend() {
            "sqlite" => store.iter().collect(),
            _ => store.iter().take(1).collect(), // the store's directory
        };
        for p in &widened {
            let m = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        let health = h.storage.health().await.unwrap();
        for p in &widened {
            let named =
                health.warnings.iter().find(|w| w.contains(EXPOSED) && w.contains(&*p.to_string_lossy()));
            let w =
                named.unwrap_or_else(|| panic!("no warning names {}: {:?}", p.display(), health.warnings));
            assert!(w.contains("chmod"), "the warning says how to fix it: {w}");
        }
        for p in &widened {
            let m = if p.is_dir() { 0o700 } else { 0o600 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        }
    } else {
        let health = h.storage.health().await.unwrap();
        assert!(!health.warnings.iter().any(|w| w.contains(EXPOSED)), "{:?}", health.warnings);
    }
}
