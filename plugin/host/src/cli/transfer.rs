//! `parallax storage copy | export | import | backup`: moving the whole history between backends.
//!
//! What the CLI can judge is refused here by name before anything is opened (a location's form, a backup path
//! that exists, a target config file that cannot be read or that the plugin rejects, a backup of PostgreSQL);
//! the plugin checks the rest. The target's resolved config may hold a password: it only travels inside
//! [`CopyParams::target`] (whose `Debug` redacts it) and is never printed.

use std::{collections::BTreeMap, path::Path};

use super::{
    archive::{location, with_progress},
    args::{BackupArgs, Command, CopyArgs, ExportArgs, ImportArgs, StorageCmd},
    render::{format_bytes, format_ms},
    table::{key_values, Table},
    without_schedule, CliError, Output, EXIT_CONFLICT, EXIT_OTHER,
};
use crate::{
    config,
    transfer::{
        BackupParams, BackupReport, CopyParams, ExportParams, ExportReport, ImportParams, TransferReport,
        TABLES,
    },
    Plugin, Storage,
};

/// Conflicts listed in the text output (`--output json` has the plugin's list, up to its cap).
const CONFLICTS_SHOWN: usize = 10;

/// Hex digits of a checksum shown in the text table (the JSON has all 32).
const CHECKSUM_SHOWN: usize = 12;

/// Checks locations and the backup path before anything is opened; makes relative paths absolute.
pub fn precheck(command: &mut Command) -> Result<(), CliError> {
    match command {
        Command::Storage(StorageCmd::Export(args)) => {
            args.destination = location("--destination", &args.destination)?;
        }
        Command::Storage(StorageCmd::Import(args)) => args.source = location("--source", &args.source)?,
        Command::Storage(StorageCmd::Backup(args)) => args.destination = backup_path(&args.destination)?,
        _ => {}
    }
    Ok(())
}

/// A backup destination: a local path, made absolute, that does not exist yet, in a directory that does.
fn backup_path(path: &Path) -> Result<std::path::PathBuf, CliError> {
    let text = path.to_string_lossy();
    if text.trim().is_empty() {
        return Err(CliError::usage(
            "--destination is empty; give a new file (SQLite) or directory (file store) path",
        ));
    }
    if text.contains("://") {
        return Err(CliError::usage(format!(
            "--destination {text:?}: a backup is written to a local path (e.g. /var/backups/parallax.db), not \
             a URL; to write to S3 use `parallax storage export`"
        )));
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|e| {
            CliError::usage(format!("--destination {text:?}: a relative path, and {e}; give an absolute one"))
        })?;
        cwd.join(path)
    };
    if abs.symlink_metadata().is_ok() {
        return Err(CliError::usage(format!(
            "--destination {}: already exists; a backup never overwrites anything, give a new path",
            abs.display()
        )));
    }
    match abs.parent() {
        Some(dir) if dir.is_dir() => Ok(abs),
        Some(dir) => Err(CliError::usage(format!(
            "--destination {}: the directory {} does not exist; create it first",
            abs.display(),
            dir.display()
        ))),
        None => Err(CliError::usage(format!("--destination {}: not a file path", abs.display()))),
    }
}

/// Whether a transfer command must change nothing in the configured storage, so it opens in maintenance
/// mode (no migration runs, SQLite is not converted): a dry run copy or import, any export or backup.
pub fn changes_nothing(cmd: &StorageCmd) -> bool {
    match cmd {
        StorageCmd::Copy(args) => args.dry_run,
        StorageCmd::Import(args) => args.dry_run,
        StorageCmd::Export(_) | StorageCmd::Backup(_) => true,
        _ => false,
    }
}

/// Resolves `--to-config` (interpolated, without the `PARALLAX_*` overrides), without its retention
/// schedule, checked by the plugin, into the `copy` op's parameters. Every error names the file.
pub fn prepare_copy(plugin: &Plugin, args: &mut CopyArgs) -> Result<(), CliError> {
    let file = args.to_config.display().to_string();
    let mut target = config::resolve_target_from_env(&args.to_config)?;
    without_schedule(&mut target.storage);
    plugin.check_config(&target.storage).map_err(|e| {
        CliError::usage(format!("--to-config {file}: {} (fix the target's config file)", e.message()))
    })?;
    let text = serde_json::to_string(&target.storage)
        .map_err(|e| CliError::new(EXIT_OTHER, format!("--to-config {file}: cannot encode it: {e}")))?;
    args.params =
        Some(CopyParams { target: text, target_label: Some(file), dry_run: args.dry_run, merge: args.merge });
    Ok(())
}

/// A backup of PostgreSQL is refused before connecting: the plugin would refuse it too, and the operator
/// learns the right tool even while the database is down.
pub fn refuse_postgres_backup(plugin: &Plugin, storage: &serde_json::Value) -> Result<(), CliError> {
    let Ok(report) = plugin.check_config(storage) else { return Ok(()) }; // the open names the config error
    if report.backend == "postgresql" {
        return Err(CliError::new(
            EXIT_OTHER,
            "unsupported: `storage backup` copies a SQLite file or a file store; back up PostgreSQL with \
             `pg_dump --format=custom --file parallax.dump \"$DATABASE_URL\"` and restore with `pg_restore` \
             (README, section Backups)",
        ));
    }
    Ok(())
}

pub async fn copy(store: &Storage, args: CopyArgs) -> Result<Output, CliError> {
    let params =
        args.params.ok_or_else(|| CliError::new(EXIT_OTHER, "internal: the copy target was not resolved"))?;
    let report = with_progress("copy", store.copy(&params)).await?;
    Ok(transfer_output(&report, "copy"))
}

pub async fn export(store: &Storage, args: ExportArgs) -> Result<Output, CliError> {
    let params = ExportParams { destination: args.destination, dry_run: args.dry_run };
    let report = with_progress("export", store.export(&params)).await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    Ok(Output::new(json, export_text(&report)))
}

pub async fn import(store: &Storage, args: ImportArgs) -> Result<Output, CliError> {
    let params = ImportParams { source: args.source, merge: args.merge, dry_run: args.dry_run };
    let report = with_progress("import", store.import(&params)).await?;
    Ok(transfer_output(&report, "import"))
}

pub async fn backup(store: &Storage, args: BackupArgs) -> Result<Output, CliError> {
    let params = BackupParams { destination: args.destination.display().to_string() };
    let report = with_progress("backup", store.backup(&params)).await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    let mut out = Output::new(json, backup_text(&report));
    if let Some(answer) = report.integrity.as_deref().filter(|a| *a != "ok") {
        out.failure = Some(CliError::new(
            EXIT_OTHER,
            format!("the backup at {} failed PRAGMA integrity_check: {answer}", report.destination),
        ));
    }
    Ok(out)
}

/// A copy or import report as the command's output, failing after printing on a mismatch (exit 1) or on
/// conflicts (exit 4).
fn transfer_output(r: &TransferReport, what: &str) -> Output {
    let json = serde_json::to_value(r).unwrap_or_default();
    let mut out = Output::new(json, transfer_text(r, what));
    out.failure = transfer_failure(r, what);
    out
}

/// The failure of a finished run, if any: a verification mismatch first (the data differs), then conflicts.
/// A dry run fails on neither (nothing was written to compare).
pub fn transfer_failure(r: &TransferReport, what: &str) -> Option<CliError> {
    if r.dry_run {
        return None;
    }
    if !r.verified {
        let bad: Vec<String> = r
            .tables
            .iter()
            .filter(|t| !t.ok)
            .map(|t| {
                format!(
                    "{}: source {} rows checksum {}, target {} rows checksum {}",
                    t.table, t.source_rows, t.source_checksum, t.target_rows, t.target_checksum
                )
            })
            .collect();
        let detail = if !r.problems.is_empty() {
            r.problems.join("; ")
        } else if bad.is_empty() {
            "see the report above".to_string()
        } else {
            bad.join("; ")
        };
        return Some(CliError::new(
            EXIT_OTHER,
            format!(
                "the {what} did not verify: {detail}; run the same command again: it resumes, or after a run that \
                 did not verify reads the whole source again, and verifies"
            ),
        ));
    }
    if r.conflict_count > 0 {
        let first = r.conflicts.first().map(|c| format!(" (first: {} {}: {})", c.table, c.id, c.reason));
        return Some(CliError::new(
            EXIT_CONFLICT,
            format!(
                "{} conflict{}: rows present in the target with different content were not overwritten{}",
                r.conflict_count,
                if r.conflict_count == 1 { "" } else { "s" },
                first.unwrap_or_default()
            ),
        ));
    }
    None
}

/// The tables of a report in [`TABLES`] order, then any other.
fn ordered<'a>(tables: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let rank = |t: &str| TABLES.iter().position(|k| *k == t).unwrap_or(usize::MAX);
    let mut v: Vec<&String> = tables.into_iter().collect();
    v.sort_by_key(|t| (rank(t), (*t).clone()));
    v.dedup();
    v
}

/// `3 executions, 6 execution_events`, or `none`.
fn rows_text(rows: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = ordered(rows.keys())
        .into_iter()
        .filter(|t| rows[*t] > 0)
        .map(|t| format!("{} {t}", rows[t]))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn short(checksum: &str) -> String {
    if checksum.is_empty() {
        "-".into()
    } else if checksum.chars().count() > CHECKSUM_SHOWN {
        format!("{}…", checksum.chars().take(CHECKSUM_SHOWN).collect::<String>())
    } else {
        checksum.to_string()
    }
}

fn mode_text(mode: &str) -> String {
    match mode {
        "fresh" => "fresh (the target was empty)".into(),
        "resumed" => "resumed (an interrupted run was finished)".into(),
        "catch-up" => "catch-up (a finished run continued with a new snapshot)".into(),
        "merge" => "merge (the target already held rows)".into(),
        other => other.into(),
    }
}

/// A copy or import report as text: where from and to, the run, one row per table, what is after the
/// snapshot, what changed after it, the conflicts, and the verification line.
pub fn transfer_text(r: &TransferReport, what: &str) -> String {
    let mut out = format!(
        "{what} from {} to {}{}\n",
        r.source,
        r.target,
        if r.dry_run { " (dry run: nothing was written)" } else { "" }
    );
    let mut kv = vec![("mode", mode_text(&r.mode))];
    if !r.run_id.is_empty() {
        kv.push(("run", r.run_id.clone()));
    }
    kv.push(("snapshot", r.snapshot.clone()));
    out.push_str(&key_values(&kv));
    let mut t = Table::new(&[
        "TABLE",
        "SOURCE ROWS",
        if r.dry_run { "WOULD COPY" } else { "COPIED" },
        "PRESENT",
        "CONFLICTS",
        "TARGET ROWS",
        "SOURCE CHECKSUM",
        "TARGET CHECKSUM",
    ]);
    for table in &r.tables {
        t.row(vec![
            table.table.clone(),
            table.source_rows.to_string(),
            table.copied.to_string(),
            table.present.to_string(),
            table.conflicts.to_string(),
            table.target_rows.to_string(),
            short(&table.source_checksum),
            short(&table.target_checksum),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&format!(
        "after the snapshot (newer than {}): {}\n",
        r.snapshot,
        rows_text(&r.after_snapshot)
    ));
    if r.changed_after_snapshot_count == 0 {
        out.push_str("changed after the snapshot: none\n");
    } else {
        let more = r.changed_after_snapshot_count > r.changed_after_snapshot.len() as u64;
        out.push_str(&format!(
            "changed after the snapshot: {} (ids {}{}); copied as they were, run again to refresh them\n",
            r.changed_after_snapshot_count,
            r.changed_after_snapshot.join(", "),
            if more { ", …" } else { "" }
        ));
    }
    if r.conflict_count > 0 {
        out.push_str(&format!(
            "conflicts: {} (present in the target with different content, not overwritten):\n",
            r.conflict_count
        ));
        for c in r.conflicts.iter().take(CONFLICTS_SHOWN) {
            out.push_str(&format!("  {} {}: {}\n", c.table, c.id, c.reason));
        }
        let listed = r.conflicts.len().min(CONFLICTS_SHOWN) as u64;
        if r.conflict_count > listed {
            out.push_str(&format!("  … and {} more (--output json lists more)\n", r.conflict_count - listed));
        }
    }
    if r.dry_run {
        out.push_str(&format!("note: run again without --dry-run to {what} these rows\n"));
    } else if r.verified {
        out.push_str("verified: counts and checksums equal\n");
    } else {
        let bad: Vec<&str> = r.tables.iter().filter(|t| !t.ok).map(|t| t.table.as_str()).collect();
        out.push_str(&format!(
            "verified: NO, counts or checksums differ ({})\n",
            if bad.is_empty() { "see above".to_string() } else { bad.join(", ") }
        ));
        for p in &r.problems {
            out.push_str(&format!("  {p}\n"));
        }
    }
    out.push_str(&key_values(&[("duration", format_ms(r.duration_ms as i64))]));
    out
}

/// An export report as text.
pub fn export_text(r: &ExportReport) -> String {
    let mut out = format!(
        "export to {}{}\n",
        r.destination,
        if r.dry_run { " (dry run: nothing was written)" } else { "" }
    );
    let mut kv = Vec::new();
    if !r.run_id.is_empty() {
        kv.push(("run", r.run_id.clone()));
    }
    kv.push(("snapshot", r.snapshot.clone()));
    out.push_str(&key_values(&kv));
    let mut t = Table::new(&["TABLE", if r.dry_run { "WOULD EXPORT" } else { "ROWS" }, "CHECKSUM"]);
    for table in &r.tables {
        t.row(vec![table.table.clone(), table.source_rows.to_string(), short(&table.source_checksum)]);
    }
    out.push_str(&t.render());
    out.push_str(&format!(
        "after the snapshot (newer than {}): {}\n",
        r.snapshot,
        rows_text(&r.after_snapshot)
    ));
    let mut kv = Vec::new();
    if !r.dry_run {
        kv.push(("objects", format!("{} ({} compressed)", r.objects, format_bytes(r.bytes))));
        if !r.manifests.is_empty() {
            kv.push(("written last", r.manifests.last().cloned().unwrap_or_default()));
        }
    }
    kv.push(("duration", format_ms(r.duration_ms as i64)));
    out.push_str(&key_values(&kv));
    if r.dry_run {
        out.push_str("note: the destination can be reached; run again without --dry-run to export\n");
    } else {
        out.push_str(&format!(
            "import it with: parallax --config TARGET.yaml storage import --source {}\n",
            r.destination
        ));
    }
    out
}

/// A backup report as text.
pub fn backup_text(r: &BackupReport) -> String {
    let mut out = format!("backup of the {} storage to {}\n", r.backend, r.destination);
    let mut t = Table::new(&["TABLE", "ROWS"]);
    for table in ordered(r.rows.keys()) {
        t.row(vec![table.clone(), r.rows[table].to_string()]);
    }
    out.push_str(&t.render());
    let mut kv = vec![("written", format!("{} files, {}", r.files, format_bytes(r.bytes)))];
    if let Some(i) = &r.integrity {
        kv.push(("integrity check", i.clone()));
    }
    kv.push(("duration", format_ms(r.duration_ms as i64)));
    out.push_str(&key_values(&kv));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::{Conflict, TableTransfer};

    fn table(name: &str, rows: u64, same: bool) -> TableTransfer {
        TableTransfer {
            table: name.into(),
            source_rows: rows,
            copied: rows,
            present: 0,
            conflicts: 0,
            target_rows: if same { rows } else { rows - 1 },
            source_checksum: "0123456789abcdef0123456789abcdef".into(),
            target_checksum: if same {
                "0123456789abcdef0123456789abcdef"
            } else {
                "ffff456789abcdef0123456789abcdef"
            }
            .into(),
            ok: same,
        }
    }

    fn report() -> TransferReport {
        TransferReport {
            source: "sqlite /tmp/a.db".into(),
            target: "postgresql u@db:5432/prod (prod.yaml)".into(),
            mode: "fresh".into(),
            run_id: "r1".into(),
            snapshot: "2026-12-02T03:00:00.000000Z".into(),
            checksum_version: 1,
            tables: TABLES.iter().map(|t| table(t, 3, true)).collect(),
            after_snapshot: [("executions".to_string(), 2), ("audit_logs".to_string(), 0)]
                .into_iter()
                .collect(),
            verified: true,
            duration_ms: 1200,
            ..Default::default()
        }
    }

    #[test]
    fn a_verified_copy_prints_the_table_the_snapshot_and_the_verification() {
        let r = report();
        let text = transfer_text(&r, "copy");
        assert!(
            text.starts_with("copy from sqlite /tmp/a.db to postgresql u@db:5432/prod (prod.yaml)\n"),
            "{text}"
        );
        assert!(text.contains("TABLE             SOURCE ROWS  COPIED  PRESENT"), "{text}");
        assert!(text.contains("0123456789ab…"), "{text}");
        assert!(
            text.contains("after the snapshot (newer than 2026-12-02T03:00:00.000000Z): 2 executions\n"),
            "{text}"
        );
        assert!(text.contains("changed after the snapshot: none\n"), "{text}");
        assert!(text.contains("verified: counts and checksums equal\n"), "{text}");
        assert!(transfer_failure(&r, "copy").is_none());
    }

    #[test]
    fn a_mismatch_fails_with_1_and_conflicts_with_4() {
        let mut r = report();
        r.tables[1] = table("executions", 3, false);
        r.verified = false;
        let text = transfer_text(&r, "copy");
        assert!(text.contains("verified: NO, counts or checksums differ (executions)"), "{text}");
        let e = transfer_failure(&r, "copy").unwrap();
        assert_eq!(e.code, EXIT_OTHER);
        assert!(
            e.message.contains("executions: source 3 rows checksum 0123")
                && e.message.contains("target 2 rows")
        );

        let mut r = report();
        r.conflict_count = 12;
        r.conflicts = (0..12)
            .map(|i| Conflict {
                table: "executions".into(),
                id: format!("id{i}"),
                reason: "status: source completed, target failed".into(),
            })
            .collect();
        r.changed_after_snapshot = vec!["a".into(), "b".into()];
        r.changed_after_snapshot_count = 3;
        let text = transfer_text(&r, "copy");
        assert!(text.contains("conflicts: 12 (present in the target"), "{text}");
        assert!(text.contains("  executions id0: status: source completed, target failed\n"), "{text}");
        assert!(!text.contains("id10"), "{text}");
        assert!(text.contains("… and 2 more"), "{text}");
        assert!(text.contains("changed after the snapshot: 3 (ids a, b, …)"), "{text}");
        let e = transfer_failure(&r, "copy").unwrap();
        assert_eq!(e.code, EXIT_CONFLICT);
        assert!(
            e.message.starts_with("12 conflicts") && e.message.contains("executions id0"),
            "{}",
            e.message
        );

        r.dry_run = true;
        r.verified = false;
        assert!(transfer_failure(&r, "copy").is_none());
        assert!(transfer_text(&r, "copy").contains("run again without --dry-run"));
    }

    #[test]
    fn backup_paths_are_new_local_paths() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("b.db");
        assert_eq!(backup_path(&new).unwrap(), new);
        let taken = dir.path().join("taken.db");
        std::fs::write(&taken, "x").unwrap();
        for (bad, says) in [
            (taken.clone(), "already exists"),
            (dir.path().join("no/such/b.db"), "does not exist; create it first"),
            ("s3://b/p".into(), "not a URL"),
            ("".into(), "is empty"),
        ] {
            let e = backup_path(&bad).unwrap_err();
            assert_eq!(e.code, super::super::EXIT_USAGE);
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
        }
        let rel = backup_path(Path::new("rel.db")).unwrap();
        assert!(rel.is_absolute() && rel.ends_with("rel.db"));
    }
}
