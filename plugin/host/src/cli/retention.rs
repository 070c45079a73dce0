//! `parallax storage cleanup executions | audit-logs` and `parallax storage retention status | run | serve`.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    args::{CleanupArgs, CleanupCmd, RetentionCmd},
    render::{format_bytes, format_ms},
    table::{key_values, Table},
    CliError, Output,
};
use crate::{
    retention::{
        CleanupParams, CleanupReport, CleanupTarget, RetentionRuleView, RetentionRunParams,
        RetentionRunResult, RetentionStatus, RunRecord,
    },
    Storage,
};

pub async fn cleanup(store: &Storage, cmd: CleanupCmd) -> Result<Output, CliError> {
    let (target, common, max_count, include_unfinished) = match cmd {
        CleanupCmd::Executions { common, max_count, include_unfinished } => {
            (CleanupTarget::Executions, common, max_count, include_unfinished)
        }
        CleanupCmd::AuditLogs { common } => (CleanupTarget::AuditLogs, common, None, false),
    };
    let CleanupArgs { older_than, dry_run, yes } = common;
    let params =
        CleanupParams { target, older_than, max_count, dry_run, include_unfinished, confirm_all: yes };
    let report = with_ticker("cleanup", store.cleanup(&params)).await?;
    let json = serde_json::to_value(&report).unwrap_or_default();
    Ok(Output::new(json, report_text(&report)))
}

/// While `work` runs longer than a moment, shows the elapsed time on stderr (a terminal only; `-v` shows the
/// plugin's own progress lines with row counts).
async fn with_ticker<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut shown = false;
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick(), if tty => {
                let _ = write!(std::io::stderr(), "\r{what} running… {} s", started.elapsed().as_secs());
                shown = true;
            }
        }
    };
    if shown {
        let _ = writeln!(std::io::stderr());
    }
    out
}

fn target_name(t: &str) -> &str {
    match t {
        "auditLogs" => "audit logs",
        other => other,
    }
}

/// A cleanup report as text: a header, one row per table, then what was kept and how long it took.
pub fn report_text(r: &CleanupReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "cleanup of {}{}\n",
        target_name(&r.target),
        if r.dry_run { " (dry run: nothing was changed)" } else { "" }
    ));
    let mut limits = Vec::new();
    if let Some(c) = &r.cutoff {
        limits.push(format!("older than {c}"));
    }
    if let Some(n) = r.max_count {
        limits.push(format!("beyond the newest {n}"));
    }
    out.push_str(&key_values(&[("selects", limits.join(", or "))]));
    let mut t = Table::new(&["TABLE", verb_header(r.dry_run), "OLDEST", "NEWEST", "HOW"]);
    for tr in &r.tables {
        let mut how = Vec::new();
        if !tr.partitions_dropped.is_empty() {
            how.push(format!(
                "{} dropped whole ({})",
                tr.partitions_dropped.len(),
                tr.partitions_dropped.join(", ")
            ));
        }
        if tr.rows_in_batches > 0 || tr.batches > 0 {
            how.push(format!("{} rows in {} batches", tr.rows_in_batches, tr.batches));
        }
        if let Some(b) = tr.bytes_reclaimed {
            how.push(format!("{} reclaimed", format_bytes(b)));
        }
        t.row(vec![
            tr.table.clone(),
            tr.rows.to_string(),
            tr.oldest.clone().unwrap_or_else(|| "-".into()),
            tr.newest.clone().unwrap_or_else(|| "-".into()),
            if how.is_empty() { "-".into() } else { how.join("; ") },
        ]);
    }
    out.push_str(&t.render());
    let mut kv = Vec::new();
    if r.target == "executions" {
        kv.push((
            "unfinished kept",
            format!("{} (old pending/running; --include-unfinished removes them)", r.unfinished_kept),
        ));
    }
    if let Some(first) = r.tables.first() {
        if !first.sample_ids.is_empty() {
            kv.push(("sample ids", first.sample_ids.join(", ")));
        }
    }
    if let Some(left) = r.rows_left {
        kv.push(("rows that would stay", left.to_string()));
    }
    kv.push(("duration", format_ms(r.duration_ms as i64)));
    if let Some(id) = &r.run_id {
        kv.push(("run", id.clone()));
    }
    out.push_str(&key_values(&kv));
    if r.dry_run {
        out.push_str("note: run again without --dry-run to remove these rows\n");
    }
    out
}

fn verb_header(dry_run: bool) -> &'static str {
    if dry_run {
        "WOULD GO"
    } else {
        "REMOVED"
    }
}

pub async fn run(store: &Storage, cmd: RetentionCmd) -> Result<Output, CliError> {
    match cmd {
        RetentionCmd::Status => {
            let s = store.retention_status().await?;
            Ok(Output::new(serde_json::to_value(&s).unwrap_or_default(), status_text(&s)))
        }
        RetentionCmd::Run { tick, dry_run } => {
            let r = with_ticker("retention run", store.retention_run(&RetentionRunParams { tick, dry_run }))
                .await?;
            Ok(Output::new(serde_json::to_value(&r).unwrap_or_default(), run_text(&r)))
        }
        RetentionCmd::Serve => serve(store).await,
    }
}

fn rule_text(r: &Option<RetentionRuleView>) -> String {
    match r {
        None => "not configured".into(),
        Some(r) => {
            let mut parts = vec![if r.enabled { "enabled" } else { "disabled" }.to_string()];
            if let Some(a) = &r.max_age {
                parts.push(format!("maxAge {a}"));
            }
            if let Some(n) = r.max_count {
                parts.push(format!("maxCount {n}"));
            }
            parts.join(", ")
        }
    }
}

/// What a run removed: `12 executions, 40 execution_events`, or `nothing`.
fn removed(r: &RunRecord) -> String {
    let rows: Vec<String> = r.rows.iter().filter(|(_, n)| **n > 0).map(|(t, n)| format!("{n} {t}")).collect();
    if rows.is_empty() {
        "nothing".into()
    } else {
        rows.join(", ")
    }
}

/// One run on one line: `2026-…Z manual succeeded in 1.2 s: 12 executions, 40 execution_events`.
pub fn run_summary(r: &RunRecord) -> String {
    let mut s = format!("{} {} {}", r.started_at, r.trigger, r.status);
    if let Some(ms) = r.duration_ms {
        s.push_str(&format!(" in {}", format_ms(ms as i64)));
    }
    s.push_str(&format!(": removed {}", removed(r)));
    if let Some(e) = &r.error {
        s.push_str(&format!("; error: {e}"));
    }
    s
}

/// The recorded runs as a table.
pub fn runs_table(runs: &[RunRecord]) -> String {
    let mut t = Table::new(&["STARTED", "TRIGGER", "TICK", "STATUS", "DURATION", "REMOVED", "ERROR"]);
    for r in runs {
        t.row(vec![
            r.started_at.clone(),
            r.trigger.clone(),
            r.tick.clone().unwrap_or_else(|| "-".into()),
            r.status.clone(),
            r.duration_ms.map_or("-".into(), |ms| format_ms(ms as i64)),
            removed(r),
            r.error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.render()
}

fn status_text(s: &RetentionStatus) -> String {
    let schedule = match &s.schedule {
        Some(expr) => format!("{expr} (UTC)"),
        None => "not set (storage.retention.cleanupSchedule)".into(),
    };
    let mut out = key_values(&[
        ("schedule", schedule),
        (
            "scheduled",
            if s.scheduled { "yes".into() } else { "no (needs a schedule and an enabled rule)".into() },
        ),
        ("next run", s.next_run.clone().unwrap_or_else(|| "-".into())),
        ("executions", rule_text(&s.executions)),
        ("audit logs", rule_text(&s.audit_logs)),
    ]);
    out.push_str("runs (newest first):\n");
    out.push_str(&runs_table(&s.runs));
    out
}

fn run_text(r: &RetentionRunResult) -> String {
    let mut out = String::new();
    match (&r.run, &r.skipped) {
        (Some(run), _) => out.push_str(&key_values(&[
            ("run", run.id.clone()),
            ("status", run.status.clone()),
            ("trigger", run.trigger.clone()),
        ])),
        (None, Some(why)) => out.push_str(&key_values(&[("skipped", why.clone())])),
        (None, None) => {}
    }
    for report in &r.reports {
        out.push('\n');
        out.push_str(&report_text(report));
    }
    out
}

/// Keeps the storage open (its scheduler runs inside the plugin) until SIGINT or SIGTERM.
async fn serve(store: &Storage) -> Result<Output, CliError> {
    let status = store.retention_status().await?;
    if !status.scheduled {
        return Err(CliError::usage(
            "nothing to serve: storage.retention needs a cleanupSchedule and at least one enabled rule \
             (executions or auditLogs with maxAge or maxCount); `parallax storage retention status` shows them",
        ));
    }
    eprintln!(
        "serving the retention schedule {} (UTC); next run {}; stop with Ctrl-C or SIGTERM",
        status.schedule.as_deref().unwrap_or("-"),
        status.next_run.as_deref().unwrap_or("-")
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::new(super::EXIT_OTHER, format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let runs = store.retention_status().await?.runs;
    Ok(Output::new(json!({ "stopped": true, "runs": runs }), "stopped\n"))
}
