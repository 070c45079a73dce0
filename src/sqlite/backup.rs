//! `backup` of a SQLite store: a consistent copy of the database file while the plugin keeps writing.
//!
//! - `VACUUM INTO` runs as one read transaction: in WAL mode it sees one snapshot of the database while the
//!   writer goes on committing (the C backup API's incremental steps restart at every commit of another
//!   connection and would never finish under a steady write load). It runs on a dedicated connection: the read
//!   pool's connections set `query_only`, under which SQLite refuses to write the copy. Without WAL
//!   (`storage.sqlite.walMode: false`) the read transaction blocks writers until the copy is written.
//! - The copy is written to `<destination>.partial-<pid>`; SQLite does not sync it, so it is synced, renamed to
//!   the destination and the directory synced (a crash leaves no file at the destination, or the whole copy).
//! - The copy is then opened on its own and must pass `PRAGMA integrity_check`; its rows per table are the
//!   report's.
//! - Refused: a relative destination, one that exists, the database itself or its `-wal` / `-shm` files, a
//!   directory that does not exist.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use diesel::{
    connection::SimpleConnection, sql_query, sql_types::Text, Connection, QueryableByName, RunQueryDsl,
    SqliteConnection,
};
use parallax_storage_abi::transfer::{BackupReport, TABLES};

use super::{connection, SqliteBackend};
use crate::{
    error::{sqlite_error, Error, Result},
    file::durable::sync_dir,
};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Check {
    #[diesel(sql_type = Text)]
    integrity_check: String,
}

/// `path` with its directory resolved (the file itself need not exist), for comparing paths.
fn resolved(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            fs::canonicalize(dir).map(|d| d.join(name)).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// Refuses a destination the backup must not write; returns its directory.
pub(super) fn check_destination(db: &Path, dest: &Path) -> Result<PathBuf> {
    if !dest.is_absolute() {
        return Err(Error::invalid(format!(
            "backup destination {} is not an absolute path; give the full path of the new file",
            dest.display()
        )));
    }
    let target = resolved(dest);
    let db = resolved(db);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let own = PathBuf::from(format!("{}{suffix}", db.display()));
        if target == own {
            return Err(Error::invalid(format!(
                "backup destination {} is the database's own file {}; choose a path outside the live database",
                dest.display(),
                own.display()
            )));
        }
    }
    if fs::symlink_metadata(dest).is_ok() {
        return Err(Error::invalid(format!(
            "backup destination {} exists already; a backup never overwrites a file: choose a new path or remove it",
            dest.display()
        )));
    }
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| Error::invalid(format!("backup destination {} has no directory", dest.display())))?;
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "backup destination {}: directory {} does not exist; create it first",
            dest.display(),
            dir.display()
        )));
    }
    Ok(dir.to_path_buf())
}

/// Counts the rows of every table of [`TABLES`] and runs `PRAGMA integrity_check` on the copy at `path`.
fn check_copy(path: &Path) -> Result<(BTreeMap<String, u64>, String)> {
    let url =
        path.to_str().ok_or_else(|| Error::invalid(format!("{} is not valid UTF-8", path.display())))?;
    super::connection::library_mode();
    let mut conn = SqliteConnection::establish(url)
        .map_err(|e| Error::unavailable(format!("cannot open the backup {}: {e}", path.display())))?;
    conn.batch_execute("PRAGMA query_only = ON;").map_err(sqlite_error)?;
    let check: Vec<Check> = sql_query("PRAGMA integrity_check").load(&mut conn).map_err(sqlite_error)?;
    let integrity = check.into_iter().map(|c| c.integrity_check).collect::<Vec<_>>().join("; ");
    let mut rows = BTreeMap::new();
    for table in TABLES {
        let c: Count = sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result(&mut conn)
            .map_err(sqlite_error)?;
        rows.insert(table.to_string(), c.n as u64);
    }
    Ok((rows, integrity))
}

/// The blocking part of the backup ([`crate::transfer::Store::backup`]).
fn backup_blocking(cfg: &crate::config::SqliteConfig, dest: &Path) -> Result<BackupReport> {
    let started = Instant::now();
    let dir = check_destination(&cfg.path, dest)?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = dir.join(format!("{name}.partial-{}", std::process::id()));
    // A leftover of this very process (an earlier failed backup): never another process's file.
    let _ = fs::remove_file(&partial);
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::unavailable(format!("backup to {}: {what} {} failed: {e}", dest.display(), p.display()))
    };
    let result = (|| -> Result<()> {
        // Owner-only: VACUUM INTO writes into an empty file that exists and keeps its mode.
        crate::private::precreate(&partial).map_err(|e| io("creating", &partial, e))?;
        let mut conn = connection::plain(cfg)?;
        let target = partial.to_str().ok_or_else(|| {
            Error::invalid(format!("backup destination {} is not valid UTF-8", dest.display()))
        })?;
        sql_query("VACUUM INTO ?1").bind::<Text, _>(target).execute(&mut conn).map_err(|e| {
            let e = sqlite_error(e);
            Error::new(e.kind(), format!("backup to {}: VACUUM INTO failed: {}", dest.display(), e.0.message))
        })?;
        drop(conn);
        fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(|e| io("syncing", &partial, e))?;
        if fs::symlink_metadata(dest).is_ok() {
            return Err(Error::conflict(format!(
                "backup destination {} appeared while the backup ran; the copy was not moved there",
                dest.display()
            )));
        }
        fs::rename(&partial, dest).map_err(|e| io("renaming", &partial, e))?;
        sync_dir(&dir).map_err(|e| io("syncing the directory", &dir, e))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    let (rows, integrity) = check_copy(dest)?;
    if integrity != "ok" {
        return Err(Error::internal(format!(
            "the backup {} fails PRAGMA integrity_check: {integrity}; it was left there for inspection, do not \
             restore it",
            dest.display()
        )));
    }
    let bytes = fs::metadata(dest).map_err(|e| io("reading", dest, e))?.len();
    Ok(BackupReport {
        backend: "sqlite".into(),
        destination: dest.display().to_string(),
        bytes,
        files: 1,
        rows,
        integrity: Some(integrity),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

impl SqliteBackend {
    pub(super) async fn backup_impl(&self, destination: PathBuf) -> Result<BackupReport> {
        let cfg = self.cfg.sqlite.clone();
        tokio::task::spawn_blocking(move || backup_blocking(&cfg, &destination))
            .await
            .map_err(|e| Error::internal(format!("the SQLite backup task failed: {e}")))?
    }
}
