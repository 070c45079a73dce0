//! `parallax storage archive executions | audit-logs | verify` and `parallax storage restore`.
//!
//! Values the CLI can judge (a missing age, a relative `file://` URL, an unknown scheme, `--max-count` on audit
//! logs) are refused here by name before the storage is opened; the plugin checks the rest. On a terminal the
//! plugin's progress lines (target `parallax_storage::archive` / `::retention`, every 2 s) and the elapsed time
//! are shown on stderr; elsewhere nothing is, unless `-v`.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use super::{
    args::{ArchiveArgs, ArchiveCmd, Command, RestoreArgs, StorageCmd},
    render::{format_bytes, format_ms},
    table::{key_values, Table},
    CliError, Output, EXIT_OTHER,
};
use crate::{
    archive::{ArchiveParams, ArchiveReport, RestoreParams, RestoreReport, VerifyParams, VerifyReport},
    logs::PluginLog,
    retention::CleanupTarget,
    LogLevel, Storage,
};

/// The destination forms, for messages.
const FORMS: &str = "s3://bucket/prefix/, file:///absolute/path/ or a directory path";

/// At most this many objects are listed in the text summary (`--output json` lists them all).
const OBJECTS_SHOWN: usize = 20;

/// Checks what the CLI can tell about an archive or restore command before anything is opened, and makes a
/// relative directory path absolute (so the run records and the report name one place). Other commands pass.
pub fn precheck(command: &mut Command) -> Result<(), CliError> {
    match command {
        Command::Storage(StorageCmd::Archive(cmd)) => match cmd {
            ArchiveCmd::Executions { common, max_count } => {
                if common.older_than.is_none() && max_count.is_none() {
                    return Err(CliError::usage(
                        "archive executions needs --older-than AGE (e.g. 30d) or --max-count N",
                    ));
                }
                common.destination = location("--destination", &common.destination)?;
            }
            ArchiveCmd::AuditLogs { common, max_count } => {
                if let Some(n) = max_count {
                    return Err(CliError::usage(format!(
                        "--max-count {n}: applies to executions only; audit entries are archived by age \
                         (--older-than AGE, e.g. 90d)"
                    )));
                }
                if common.older_than.is_none() {
                    return Err(CliError::usage("archive audit-logs needs --older-than AGE (e.g. 90d)"));
                }
                common.destination = location("--destination", &common.destination)?;
            }
            ArchiveCmd::Verify { source } => *source = location("--source", source)?,
        },
        Command::Storage(StorageCmd::Restore(args)) => args.source = location("--source", &args.source)?,
        _ => {}
    }
    Ok(())
}

/// Whether an archive or restore command must change nothing (dry runs, verify), so the storage opens in
/// maintenance mode (no auto-migration), as cleanup's dry run does.
pub fn changes_nothing(cmd: &StorageCmd) -> bool {
    match cmd {
        StorageCmd::Archive(ArchiveCmd::Executions { common, .. } | ArchiveCmd::AuditLogs { common, .. }) => {
            common.dry_run
        }
        StorageCmd::Archive(ArchiveCmd::Verify { .. }) => true,
        StorageCmd::Restore(args) => args.dry_run,
        _ => false,
    }
}

/// A destination or source as the plugin takes it: `s3://bucket/…`, `file:///abs/…` or an absolute path.
pub(super) fn location(flag: &str, text: &str) -> Result<String, CliError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(CliError::usage(format!("{flag} is empty; expected {FORMS}")));
    }
    if let Some(rest) = t.strip_prefix("s3://") {
        if rest.split('/').next().unwrap_or("").is_empty() {
            return Err(CliError::usage(format!(
                "{flag} {text:?}: an S3 URL needs a bucket: s3://bucket/prefix/"
            )));
        }
        return Ok(t.to_string());
    }
    if let Some(rest) = t.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(CliError::usage(format!(
                "{flag} {text:?}: a file URL needs an absolute path, with three slashes \
                 (file:///var/backups/parallax/); or give a directory path"
            )));
        }
        return Ok(t.to_string());
    }
    if let Some((scheme, _)) = t.split_once("://") {
        return Err(CliError::usage(format!(
            "{flag} {text:?}: unsupported scheme {scheme:?}; expected {FORMS}"
        )));
    }
    let path = std::path::Path::new(t);
    if path.is_absolute() {
        return Ok(t.to_string());
    }
    let cwd = std::env::current_dir().map_err(|e| {
        CliError::usage(format!("{flag} {text:?}: a relative path, and {e}; give an absolute one"))
    })?;
    let mut abs = cwd.join(path).display().to_string();
    if t.ends_with('/') && !abs.ends_with('/') {
        abs.push('/');
    }
    Ok(abs)
}

pub async fn run(store: &Storage, cmd: ArchiveCmd) -> Result<Output, CliError> {
    let (target, common, max_count) = match cmd {
        ArchiveCmd::Executions { common, max_count } => (CleanupTarget::Executions, common, max_count),
        ArchiveCmd::AuditLogs { common, .. } => (CleanupTarget::AuditLogs, common, None),
        ArchiveCmd::Verify { source } => return verify(store, source).await,
    };
    let ArchiveArgs { older_than, destination, dry_run, keep, yes } = common;
    let params =
        ArchiveParams { target, older_than, max_count, destination, dry_run, keep, confirm_all: yes };
    let report = with_progress("archive", store.archive(&params)).await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    Ok(Output::new(json, archive_text(&report)))
}

async fn verify(store: &Storage, source: String) -> Result<Output, CliError> {
    let report = with_progress("verify", store.archive_verify(&VerifyParams { source })).await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    let mut out = Output::new(json, verify_text(&report));
    if !report.ok {
        out.failure = Some(CliError::new(EXIT_OTHER, verify_failure(&report)));
    }
    Ok(out)
}

pub async fn restore(store: &Storage, args: RestoreArgs) -> Result<Output, CliError> {
    let params = RestoreParams { source: args.source, dry_run: args.dry_run };
    let report = with_progress("restore", store.restore(&params)).await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    Ok(Output::new(json, restore_text(&report)))
}

/// While `work` runs, on a terminal: the elapsed time on the last line of stderr, and above it each progress
/// line the plugin logs. With `-v` (or a RUST_LOG that shows the plugin's info) the log lines are the
/// progress, and no ticker line is drawn between them. Nothing when stderr is not a terminal.
pub(super) async fn with_progress<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    let tty = std::io::stderr().is_terminal()
        && !tracing::enabled!(target: "parallax_storage", tracing::Level::INFO);
    let started = Instant::now();
    if tty {
        crate::logs::set_hook(move |log| {
            if let Some(line) = progress_line(log) {
                let secs = started.elapsed().as_secs();
                // One write: the ticker's line is cleared, the progress line stays, the ticker redraws.
                let _ = write!(std::io::stderr().lock(), "\r\x1b[K[{secs:>4} s] {line}\n");
            }
        });
    }
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut shown = false;
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick(), if tty => {
                let secs = started.elapsed().as_secs();
                let _ = write!(std::io::stderr().lock(), "\r\x1b[K{what} running… {secs} s");
                shown = true;
            }
        }
    };
    if tty {
        crate::logs::set_hook(|_| {});
    }
    if shown {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
    }
    out
}

/// A plugin log event as a progress line, if it is one: info from the archive, retention or transfer modules
/// (the archive run, the delete step it shares with cleanup, and copy, export, import and backup).
pub fn progress_line(log: &PluginLog) -> Option<String> {
    let ours = ["parallax_storage::archive", "parallax_storage::retention", "parallax_storage::transfer"]
        .iter()
        .any(|t| log.target == *t || log.target.starts_with(&format!("{t}::")));
    if log.level != LogLevel::Info || !ours {
        return None;
    }
    let mut line = log.message.clone();
    for (k, v) in &log.fields {
        line.push_str(&format!(" {k}={v}"));
    }
    Some(super::input::one_line(&line))
}

fn target_name(t: &str) -> &str {
    match t {
        "auditLogs" | "audit_logs" => "audit logs",
        other => other,
    }
}

/// Table names in reading order: executions before their events, then any other.
fn in_order<'a>(tables: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let rank = |t: &str| ["executions", "execution_events", "audit_logs"].iter().position(|k| *k == t);
    let mut v: Vec<&String> = tables.into_iter().collect();
    v.sort_by_key(|t| (rank(t).unwrap_or(usize::MAX), (*t).clone()));
    v.dedup();
    v
}

/// `120 executions, 480 execution_events`, or `none`.
fn rows_text(rows: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = in_order(rows.keys())
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

/// A key relative to an archive root, as a location the operator can pass to `--source`.
fn under(root: &str, key: &str) -> String {
    if root.ends_with('/') {
        format!("{root}{key}")
    } else {
        format!("{root}/{key}")
    }
}

/// An archive report as text: what was selected, archived (per table, objects, bytes), where the manifest
/// is, what was resumed and deleted, how long it took.
pub fn archive_text(r: &ArchiveReport) -> String {
    let mut out = format!(
        "archive of {} to {}{}\n",
        target_name(&r.target),
        r.destination,
        if r.dry_run { " (dry run: nothing was changed or written)" } else { "" }
    );
    let mut limits = Vec::new();
    if let Some(c) = &r.cutoff {
        limits.push(format!("older than {c}"));
    }
    if let Some(n) = r.max_count {
        limits.push(format!("beyond the newest {n}"));
    }
    let mut kv = vec![("selects", limits.join(", or "))];
    if let Some(id) = &r.run_id {
        kv.push(("run", id.clone()));
    }
    for rr in &r.resumed {
        let what = match rr.action.as_str() {
            "finished" => format!(
                "earlier run {} finished: its stored archive verified, {} deleted",
                rr.run_id,
                rows_text(&rr.rows)
            ),
            "cleared" => format!(
                "earlier run {} cleared: it died before its manifest, {} of its objects removed (its rows \
                 were still in the database)",
                rr.run_id, rr.objects_removed
            ),
            "abandoned" => format!(
                "earlier run {} abandoned: its manifest is gone from the destination, so nothing of it was \
                 deleted (its rows stay in the database)",
                rr.run_id
            ),
            other => format!("earlier run {} {other}", rr.run_id),
        };
        kv.push(("resumed", what));
    }
    out.push_str(&key_values(&kv));
    let mut t = Table::new(&["TABLE", if r.dry_run { "WOULD ARCHIVE" } else { "ARCHIVED" }]);
    for table in in_order(r.rows.keys()) {
        t.row(vec![table.clone(), r.rows[table].to_string()]);
    }
    out.push_str(&t.render());
    let mut kv = Vec::new();
    if !r.dry_run {
        kv.push(("objects", format!("{} ({} compressed)", r.objects.len(), format_bytes(r.bytes))));
    }
    out.push_str(&key_values(&kv));
    if !r.objects.is_empty() {
        let mut t = Table::new(&["OBJECT", "ROWS", "EVENTS", "SIZE", "OLDEST", "NEWEST"]);
        for o in r.objects.iter().take(OBJECTS_SHOWN) {
            t.row(vec![
                o.key.clone(),
                o.rows.to_string(),
                o.events.to_string(),
                format_bytes(o.size),
                o.oldest.clone().unwrap_or_else(|| "-".into()),
                o.newest.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&t.render());
        if r.objects.len() > OBJECTS_SHOWN {
            out.push_str(&format!(
                "… and {} more objects (--output json lists them all)\n",
                r.objects.len() - OBJECTS_SHOWN
            ));
        }
    }
    let mut kv = Vec::new();
    match &r.manifest {
        Some(m) => kv.push(("manifest", under(&r.destination, m))),
        None if !r.dry_run => kv.push(("manifest", "none (nothing was selected)".into())),
        None => {}
    }
    let deleted = if r.dry_run {
        "no (dry run)".to_string()
    } else if let Some(c) = &r.cleanup {
        let rows: BTreeMap<String, u64> = c.tables.iter().map(|t| (t.table.clone(), t.rows)).collect();
        format!("{} (after the archive was verified)", rows_text(&rows))
    } else if r.deleted {
        "yes (after the archive was verified)".into()
    } else {
        "nothing (--keep: the archived rows stay in the database)".into()
    };
    kv.push(("deleted", deleted));
    kv.push(("duration", format_ms(r.duration_ms as i64)));
    out.push_str(&key_values(&kv));
    if let Some(m) = &r.manifest {
        out.push_str(&format!(
            "check it any time: parallax storage archive verify --source {}\n",
            under(&r.destination, m)
        ));
    }
    if r.dry_run {
        out.push_str(
            "note: the destination can be reached; run again without --dry-run to archive these rows (and \
             delete them, unless --keep)\n",
        );
    }
    out
}

/// A verify report as text: one row per manifest, then each problem (manifest or object) with its reason,
/// then the orphans.
pub fn verify_text(r: &VerifyReport) -> String {
    let mut out = format!("verify of {}: {}\n", r.source, if r.ok { "ok" } else { "FAILED" });
    let mut t = Table::new(&["MANIFEST", "TABLE", "ROWS", "FOUND", "OBJECTS", "STATUS"]);
    for m in &r.manifests {
        let bad = m.objects.iter().filter(|o| !o.ok).count();
        t.row(vec![
            m.key.clone(),
            m.table.clone(),
            m.rows.to_string(),
            m.rows_found.to_string(),
            m.objects.len().to_string(),
            if m.ok {
                "ok".into()
            } else if bad > 0 {
                format!("{bad} bad")
            } else {
                "bad".into()
            },
        ]);
    }
    out.push_str(&t.render());
    let mut problems = Vec::new();
    for m in &r.manifests {
        if let Some(p) = &m.problem {
            problems.push(format!("  {}: {p}", m.key));
        }
        for o in m.objects.iter().filter(|o| !o.ok) {
            problems.push(format!(
                "  {}: {}",
                o.key,
                o.problem.as_deref().unwrap_or("does not match its manifest")
            ));
        }
    }
    if !problems.is_empty() {
        out.push_str("problems:\n");
        for p in problems {
            out.push_str(&p);
            out.push('\n');
        }
    }
    if !r.orphans.is_empty() {
        out.push_str(&format!(
            "objects no manifest names ({}; left by a run killed before its manifest, the next archive run to \
             this destination removes them):\n",
            r.orphans.len()
        ));
        for o in r.orphans.iter().take(OBJECTS_SHOWN) {
            out.push_str(&format!("  {o}\n"));
        }
        if r.orphans.len() > OBJECTS_SHOWN {
            out.push_str(&format!("  … and {} more\n", r.orphans.len() - OBJECTS_SHOWN));
        }
    }
    let objects: usize = r.manifests.iter().map(|m| m.objects.len()).sum();
    let rows: u64 = r.manifests.iter().map(|m| m.rows_found).sum();
    out.push_str(&key_values(&[
        ("checked", format!("{} manifests, {objects} objects, {rows} rows", r.manifests.len())),
        ("duration", format_ms(r.duration_ms as i64)),
    ]));
    out
}

/// The one-line failure of a verify that found problems: how many, and the first few by name.
fn verify_failure(r: &VerifyReport) -> String {
    let mut bad: Vec<String> = Vec::new();
    for m in &r.manifests {
        if let Some(p) = &m.problem {
            bad.push(format!("{} ({p})", m.key));
        }
        for o in m.objects.iter().filter(|o| !o.ok) {
            bad.push(format!(
                "{} ({})",
                o.key,
                o.problem.as_deref().unwrap_or("does not match its manifest")
            ));
        }
    }
    if bad.is_empty() {
        if r.manifests.is_empty() {
            return format!("no archive manifest found under {}", r.source);
        }
        return format!("the archive at {} did not verify", r.source);
    }
    let n = bad.len();
    let shown: Vec<String> = bad.into_iter().take(3).collect();
    format!(
        "the archive at {} did not verify: {n} bad ({}{})",
        r.source,
        shown.join("; "),
        if n > 3 { "; …" } else { "" }
    )
}

/// A restore report as text: the manifests applied, then per table what was inserted and skipped.
pub fn restore_text(r: &RestoreReport) -> String {
    let mut out = format!(
        "restore from {}{}\n",
        r.source,
        if r.dry_run { " (dry run: verified, nothing was written)" } else { " (verified first)" }
    );
    out.push_str(&format!("manifests ({}, oldest run first):\n", r.manifests.len()));
    for m in &r.manifests {
        out.push_str(&format!("  {m}\n"));
    }
    let mut t = Table::new(&[
        "TABLE",
        if r.dry_run { "WOULD INSERT" } else { "INSERTED" },
        "SKIPPED (ALREADY PRESENT)",
    ]);
    for table in in_order(r.inserted.keys().chain(r.skipped.keys())) {
        t.row(vec![
            table.clone(),
            r.inserted.get(table).copied().unwrap_or(0).to_string(),
            r.skipped.get(table).copied().unwrap_or(0).to_string(),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&key_values(&[("duration", format_ms(r.duration_ms as i64))]));
    if r.dry_run {
        out.push_str("note: run again without --dry-run to insert these rows\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(level: LogLevel, target: &str) -> PluginLog {
        PluginLog {
            level,
            target: target.into(),
            message: "archive in progress".into(),
            fields: vec![("objects".into(), "3".into()), ("rows".into(), "1200".into())],
        }
    }

    #[test]
    fn progress_lines_are_the_archive_and_retention_info_events() {
        assert_eq!(
            progress_line(&log(LogLevel::Info, "parallax_storage::archive")).as_deref(),
            Some("archive in progress objects=3 rows=1200")
        );
        assert!(progress_line(&log(LogLevel::Info, "parallax_storage::archive::run")).is_some());
        assert!(progress_line(&log(LogLevel::Info, "parallax_storage::retention")).is_some());
        assert!(progress_line(&log(LogLevel::Info, "parallax_storage::transfer")).is_some());
        assert!(progress_line(&log(LogLevel::Info, "parallax_storage::transfer::copy")).is_some());
        assert!(progress_line(&log(LogLevel::Info, "parallax_storage::transferx")).is_none());
        assert!(progress_line(&log(LogLevel::Debug, "parallax_storage::archive")).is_none());
        assert!(progress_line(&log(LogLevel::Info, "parallax_storage::sqlite")).is_none());
        assert!(progress_line(&log(LogLevel::Info, "parallax_storage::archiver")).is_none());
    }

    #[test]
    fn tables_read_executions_first() {
        let rows: BTreeMap<String, u64> =
            [("execution_events", 4), ("executions", 2), ("audit_logs", 0), ("zz", 1)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        assert_eq!(rows_text(&rows), "2 executions, 4 execution_events, 1 zz");
        let mut both = rows.clone();
        both.insert("audit_logs".into(), 3);
        let order: Vec<&String> = in_order(rows.keys().chain(both.keys()));
        assert_eq!(order, ["executions", "execution_events", "audit_logs", "zz"]);
        assert_eq!(rows_text(&BTreeMap::new()), "none");
    }

    #[test]
    fn locations_are_checked_and_relative_paths_made_absolute() {
        assert_eq!(location("--destination", "s3://b/p/").unwrap(), "s3://b/p/");
        assert_eq!(location("--destination", "file:///var/b/").unwrap(), "file:///var/b/");
        assert_eq!(location("--destination", "/var/b").unwrap(), "/var/b");
        let rel = location("--source", "backups/x/").unwrap();
        assert!(rel.starts_with('/') && rel.ends_with("/backups/x/"), "{rel}");
        for (bad, says) in [
            ("", "is empty"),
            ("s3://", "needs a bucket"),
            ("s3:///p/", "needs a bucket"),
            ("file://backups/x", "absolute path"),
            ("gs://b/p/", "unsupported scheme \"gs\""),
        ] {
            let e = location("--destination", bad).unwrap_err();
            assert_eq!(e.code, super::super::EXIT_USAGE);
            assert!(e.message.contains("--destination") && e.message.contains(says), "{bad}: {}", e.message);
        }
    }
}
