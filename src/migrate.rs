//! Migration logic shared by the SQL backends: status, up, down, to and mark-applied over a set of embedded
//! Diesel migrations (the same files the Diesel CLI runs). Each backend supplies a [`MigrationConn`]: how to
//! read and record applied versions and how to get exclusive rights to migrate (SQLite: `BEGIN IMMEDIATE`;
//! PostgreSQL: a transaction holding an advisory lock, so replicas starting together apply each migration once).

use abi_stable::std_types::{ROption, RString};
use diesel::{backend::Backend, migration::MigrationSource};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use parallax_storage_abi::{MigrationInfo, MigrationReport};

use crate::{
    error::{Error, Result},
    time,
};

type Migration<DB> = Box<dyn diesel::migration::Migration<DB>>;

/// What a backend connection must offer for [`status`], [`up`], [`down`], [`to`] and [`mark_applied`].
pub trait MigrationConn<DB: Backend>: MigrationHarness<DB> {
    /// Applied versions and their `run_on` as text, oldest first; empty when the table does not exist yet.
    fn applied_rows(&mut self) -> Result<Vec<(String, Option<String>)>>;
    /// Creates Diesel's migration table if it is missing.
    fn ensure_table(&mut self) -> Result<()>;
    /// Inserts `version` into Diesel's migration table.
    fn record_applied(&mut self, version: &str) -> Result<()>;
    /// Runs `f` with exclusive rights to migrate, atomically.
    fn exclusive<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T>;
}

/// The embedded migrations, oldest first.
pub fn embedded<DB: Backend>(source: &EmbeddedMigrations) -> Vec<Migration<DB>>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let mut all = MigrationSource::<DB>::migrations(source).unwrap_or_default();
    all.sort_by_key(|m| m.name().version().to_string());
    all
}

fn version_of<DB: Backend>(m: &Migration<DB>) -> String {
    m.name().version().to_string()
}

fn name_of<DB: Backend>(m: &Migration<DB>) -> String {
    let full = m.name().to_string();
    full.split_once('_').map(|(_, n)| n.to_string()).unwrap_or(full)
}

pub fn embedded_versions<DB: Backend>(source: &EmbeddedMigrations) -> Vec<String>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    embedded::<DB>(source).iter().map(version_of).collect()
}

/// Diesel's `run_on` as text (`YYYY-MM-DD HH:MM:SS[.ffffff]`, as its `CURRENT_TIMESTAMP` default writes it) to
/// microseconds. A value without an offset is taken as UTC (SQLite's `CURRENT_TIMESTAMP` is UTC); one with an
/// offset (`…+00`, `…Z`) is converted by it.
pub fn parse_run_on(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_microsecond());
    }
    time::utc_micros(s.parse().ok()?)
}

fn applied<DB: Backend, C: MigrationConn<DB>>(conn: &mut C) -> Result<Vec<(String, Option<i64>)>> {
    Ok(conn.applied_rows()?.into_iter().map(|(v, t)| (v, t.as_deref().and_then(parse_run_on))).collect())
}

pub fn status<DB: Backend, C: MigrationConn<DB>>(
    conn: &mut C,
    source: &EmbeddedMigrations,
) -> Result<Vec<MigrationInfo>>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let applied = applied(conn)?;
    let embedded = embedded::<DB>(source);
    let mut out: Vec<MigrationInfo> = embedded
        .iter()
        .map(|m| {
            let v = version_of(m);
            let at = applied.iter().find(|(a, _)| *a == v);
            MigrationInfo {
                version: v.clone().into(),
                name: name_of(m).into(),
                applied: at.is_some(),
                applied_at: at.and_then(|(_, t)| *t).into(),
            }
        })
        .collect();
    for (v, t) in &applied {
        if !embedded.iter().any(|m| version_of(m) == *v) {
            out.push(MigrationInfo {
                version: v.clone().into(),
                name: "(unknown to this plugin: the database is newer)".into(),
                applied: true,
                applied_at: (*t).into(),
            });
        }
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(out)
}

/// Versions applied in the database that `known` does not contain: the database is newer than the plugin.
pub fn unknown_applied(status: &[MigrationInfo], known: &[String]) -> Vec<String> {
    status
        .iter()
        .filter(|m| m.applied && !known.contains(&m.version.to_string()))
        .map(|m| m.version.to_string())
        .collect()
}

pub fn pending(status: &[MigrationInfo]) -> Vec<String> {
    status.iter().filter(|m| !m.applied).map(|m| m.version.to_string()).collect()
}

pub fn current_version(status: &[MigrationInfo]) -> ROption<RString> {
    status.iter().rev().find(|m| m.applied).map(|m| m.version.clone()).into()
}

/// Refuses a schema that is ahead of this plugin, or behind it unless `auto_run` (which brings it up to date).
pub fn check<DB: Backend, C: MigrationConn<DB>>(
    conn: &mut C,
    source: &EmbeddedMigrations,
    auto_run: bool,
) -> Result<()>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let st = status(conn, source)?;
    let unknown = unknown_applied(&st, &embedded_versions::<DB>(source));
    if !unknown.is_empty() {
        return Err(Error::schema(format!(
            "the database has migrations this plugin does not know ({}): it was migrated by a newer plugin; \
             upgrade the plugin, or roll back with the newer one",
            unknown.join(", ")
        )));
    }
    let pending = pending(&st);
    if pending.is_empty() {
        return Ok(());
    }
    if !auto_run {
        return Err(Error::schema(format!(
            "{} migration(s) pending ({}); run `parallax storage migrate up`, or set storage.migrations.enabled \
             and storage.migrations.autoRun to true",
            pending.len(),
            pending.join(", ")
        )));
    }
    let report = up(conn, source)?;
    tracing::info!(applied = report.applied.len(), versions = ?report.applied, "applied pending migrations");
    Ok(())
}

fn report<DB: Backend, C: MigrationConn<DB>>(
    conn: &mut C,
    source: &EmbeddedMigrations,
    applied: Vec<String>,
    reverted: Vec<String>,
) -> Result<MigrationReport>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    Ok(MigrationReport {
        applied: applied.into_iter().map(RString::from).collect(),
        reverted: reverted.into_iter().map(RString::from).collect(),
        status: status(conn, source)?.into(),
    })
}

fn failed<DB: Backend>(what: &str, m: &Migration<DB>, e: impl std::fmt::Display) -> Error {
    Error::schema(format!("{what} migration {} failed and was rolled back: {e}", m.name()))
}

/// Resolves a full version or a unique prefix of one (`20240115` for `20240115000000`); `0` means "none".
fn resolve_target<DB: Backend>(target: &str, embedded: &[Migration<DB>]) -> Result<Option<usize>> {
    let target = target.trim();
    if target == "0" {
        return Ok(None);
    }
    let matches: Vec<usize> =
        (0..embedded.len()).filter(|&i| version_of(&embedded[i]).starts_with(target)).collect();
    let known = || embedded.iter().map(version_of).collect::<Vec<_>>().join(", ");
    match matches.as_slice() {
        [i] if !target.is_empty() => Ok(Some(*i)),
        [] | [_] => Err(Error::invalid(format!(
            "no migration version matches {target:?}; known versions: {}, or 0 to revert all",
            known()
        ))),
        many => Err(Error::invalid(format!(
            "{target:?} matches {} migrations ({}); give more digits",
            many.len(),
            many.iter().map(|&i| version_of(&embedded[i])).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Applies every pending migration with index `<= upto` and reverts every applied one above it, newest first,
/// all under the backend's exclusive lock so that concurrent migrators cannot apply one migration twice.
fn converge<DB: Backend, C: MigrationConn<DB>>(
    conn: &mut C,
    source: &EmbeddedMigrations,
    upto: Option<usize>,
) -> Result<(Vec<String>, Vec<String>)>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    conn.exclusive(|conn| {
        conn.ensure_table()?;
        let embedded = embedded::<DB>(source);
        let applied: Vec<String> = conn.applied_rows()?.into_iter().map(|(v, _)| v).collect();
        let keep = |i: usize| upto.is_some_and(|u| i <= u);
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for (i, m) in embedded.iter().enumerate().rev() {
            if !keep(i) && applied.contains(&version_of(m)) {
                conn.revert_migration(&**m).map_err(|e| failed("reverting", m, e))?;
                down.push(version_of(m));
            }
        }
        for (i, m) in embedded.iter().enumerate() {
            if keep(i) && !applied.contains(&version_of(m)) {
                conn.run_migration(&**m).map_err(|e| failed("applying", m, e))?;
                up.push(version_of(m));
            }
        }
        Ok((up, down))
    })
}

pub fn up<DB: Backend, C: MigrationConn<DB>>(
    conn: &mut C,
    source: &EmbeddedMigrations,
) -> Result<MigrationReport>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let n = embedded::<DB>(source).len();
    let (up, down) = converge(conn, source, n.checked_sub(1))?;
    report(conn, source, up, down)
}

pub fn down<DB: Backend, C: MigrationConn<DB>>(
    conn: &mut C,
    source: &EmbeddedMigrations,
) -> Result<MigrationReport>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let embedded = embedded::<DB>(source);
    let applied: Vec<String> = conn.applied_rows()?.into_iter().map(|(v, _)| v).collect();
    let Some(last) = embedded.iter().rposition(|m| applied.contains(&version_of(m))) else {
        return Err(Error::invalid("no migration is applied; there is nothing to roll back"));
    };
    let (up, down) = converge(conn, source, last.checked_sub(1))?;
    report(conn, source, up, down)
}

pub fn to<DB: Backend, C: MigrationConn<DB>>(
    conn: &mut C,
    source: &EmbeddedMigrations,
    target: &str,
) -> Result<MigrationReport>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let idx = resolve_target(target, &embedded::<DB>(source))?;
    let (up, down) = converge(conn, source, idx)?;
    report(conn, source, up, down)
}

/// `mark_applied` was asked for a version that is applied: the same answer on every backend (the file store's
/// versions are its format versions).
pub fn already_applied(version: &str) -> Error {
    Error::conflict(format!(
        "migration {version} is already applied; only a version that is not applied can be marked as applied"
    ))
}

/// Records `target` (a full version or unique prefix) as applied without running it, for the case where an
/// operator fixed the schema by hand. Refuses a version that is already applied.
pub fn mark_applied<DB: Backend, C: MigrationConn<DB>>(
    conn: &mut C,
    source: &EmbeddedMigrations,
    target: &str,
) -> Result<MigrationReport>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let embedded = embedded::<DB>(source);
    let Some(idx) = resolve_target(target, &embedded)? else {
        return Err(Error::invalid("give the version to mark as applied, not 0"));
    };
    let version = version_of(&embedded[idx]);
    conn.exclusive(|conn| {
        conn.ensure_table()?;
        if conn.applied_rows()?.iter().any(|(v, _)| *v == version) {
            return Err(already_applied(&version));
        }
        conn.record_applied(&version)
    })?;
    tracing::warn!(version = %version, "migration marked as applied without running it");
    report(conn, source, vec![version], vec![])
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_on_formats() {
        let base = 1_705_276_800_000_000; // 2024-01-15T00:00:00Z
        assert_eq!(super::parse_run_on("2024-01-15 10:30:00"), Some(base + 37_800_000_000));
        assert_eq!(super::parse_run_on("2024-01-15 10:30:00.25"), Some(base + 37_800_250_000));
        assert_eq!(super::parse_run_on("2024-01-15T10:30:00.000001Z"), Some(base + 37_800_000_001));
        assert_eq!(super::parse_run_on("2024-01-15 12:30:00+02"), Some(base + 37_800_000_000));
        assert_eq!(super::parse_run_on("2024-02-30 10:30:00"), None);
        assert_eq!(super::parse_run_on("nope"), None);
    }
}
