//! The embedded SQLite migrations (`migrations/sqlite`, the same files the Diesel CLI runs) and the
//! status/up/down/to operations behind `parallax storage migrate`.

use abi_stable::std_types::{ROption, RString};
use diesel::migration::MigrationSource;
use diesel::{
    sql_query,
    sql_types::{Nullable, Text},
    sqlite::{Sqlite, SqliteConnection},
    QueryableByName, RunQueryDsl,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use parallax_storage_abi::{MigrationInfo, MigrationReport};

use crate::{
    error::{Error, Result},
    time::civil_to_micros,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

type Migration = Box<dyn diesel::migration::Migration<Sqlite>>;

fn embedded() -> Vec<Migration> {
    let mut all = MigrationSource::<Sqlite>::migrations(&MIGRATIONS).unwrap_or_default();
    all.sort_by_key(|m| m.name().version().to_string());
    all
}

fn version_of(m: &Migration) -> String {
    m.name().version().to_string()
}

fn name_of(m: &Migration) -> String {
    let full = m.name().to_string();
    full.split_once('_').map(|(_, n)| n.to_string()).unwrap_or(full)
}

pub fn embedded_versions() -> Vec<String> {
    embedded().iter().map(version_of).collect()
}

#[derive(QueryableByName)]
struct AppliedRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Nullable<Text>)]
    run_on: Option<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Applied versions with their time, oldest first. An empty list when no migration table exists yet.
fn applied(conn: &mut SqliteConnection) -> Result<Vec<(String, Option<i64>)>> {
    let exists: Count = sql_query(
        "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '__diesel_schema_migrations'",
    )
    .get_result(conn)?;
    if exists.n == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<AppliedRow> = sql_query(
        "SELECT version, CAST(run_on AS TEXT) AS run_on FROM __diesel_schema_migrations ORDER BY version",
    )
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.version, r.run_on.as_deref().and_then(parse_sqlite_datetime))).collect())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC, as SQLite's CURRENT_TIMESTAMP writes it) to microseconds.
fn parse_sqlite_datetime(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':').map(|p| p.parse::<f64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let secs = hh as i64 * 3600 + mm as i64 * 60;
    Some(civil_to_micros(y, m, day) + secs * 1_000_000 + (ss * 1e6) as i64)
}

pub fn status(conn: &mut SqliteConnection) -> Result<Vec<MigrationInfo>> {
    let applied = applied(conn)?;
    let embedded = embedded();
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

/// Versions applied in the database that this plugin does not know: the database is newer than the plugin.
pub fn unknown_applied(status: &[MigrationInfo]) -> Vec<String> {
    let known = embedded_versions();
    status
        .iter()
        .filter(|m| m.applied && !known.contains(&m.version.to_string()))
        .map(|m| m.version.to_string())
        .collect()
}

pub fn pending(status: &[MigrationInfo]) -> Vec<String> {
    status.iter().filter(|m| !m.applied).map(|m| m.version.to_string()).collect()
}

fn report(
    conn: &mut SqliteConnection,
    applied: Vec<String>,
    reverted: Vec<String>,
) -> Result<MigrationReport> {
    Ok(MigrationReport {
        applied: applied.into_iter().map(RString::from).collect(),
        reverted: reverted.into_iter().map(RString::from).collect(),
        status: status(conn)?.into(),
    })
}

fn failed(what: &str, m: &Migration, e: impl std::fmt::Display) -> Error {
    Error::schema(format!("{what} migration {} failed and was rolled back: {e}", m.name()))
}

/// Resolves a full version or a unique prefix of one (`20240115` for `20240115000000`); `0` means "none".
fn resolve_target(target: &str, embedded: &[Migration]) -> Result<Option<usize>> {
    let target = target.trim();
    if target == "0" {
        return Ok(None);
    }
    let matches: Vec<usize> =
        (0..embedded.len()).filter(|&i| version_of(&embedded[i]).starts_with(target)).collect();
    let known = || embedded.iter().map(version_of).collect::<Vec<_>>().join(", ");
    match matches.as_slice() {
        [i] => Ok(Some(*i)),
        [] => Err(Error::invalid(format!(
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
/// all inside one `BEGIN IMMEDIATE` transaction so that two processes cannot apply the same migration twice.
fn converge(conn: &mut SqliteConnection, upto: Option<usize>) -> Result<(Vec<String>, Vec<String>)> {
    conn.immediate_transaction(|conn| {
        diesel::migration::MigrationConnection::setup(conn)?;
        let embedded = embedded();
        let applied: Vec<String> = applied(conn)?.into_iter().map(|(v, _)| v).collect();
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

pub fn up(conn: &mut SqliteConnection) -> Result<MigrationReport> {
    let n = embedded().len();
    let (up, down) = converge(conn, n.checked_sub(1))?;
    report(conn, up, down)
}

pub fn down(conn: &mut SqliteConnection) -> Result<MigrationReport> {
    let embedded = embedded();
    let applied: Vec<String> = applied(conn)?.into_iter().map(|(v, _)| v).collect();
    let Some(last) = embedded.iter().rposition(|m| applied.contains(&version_of(m))) else {
        return Err(Error::invalid("no migration is applied; there is nothing to roll back"));
    };
    let (up, down) = converge(conn, last.checked_sub(1))?;
    report(conn, up, down)
}

pub fn to(conn: &mut SqliteConnection, target: &str) -> Result<MigrationReport> {
    let idx = resolve_target(target, &embedded())?;
    let (up, down) = converge(conn, idx)?;
    report(conn, up, down)
}

pub fn current_version(status: &[MigrationInfo]) -> ROption<RString> {
    status.iter().rev().find(|m| m.applied).map(|m| m.version.clone()).into()
}

/// Records `target` (a full version or unique prefix) as applied without running it, for the case where an
/// operator fixed the schema by hand. Refuses a version that is already applied.
pub fn mark_applied(conn: &mut SqliteConnection, target: &str) -> Result<MigrationReport> {
    let embedded = embedded();
    let Some(idx) = resolve_target(target, &embedded)? else {
        return Err(Error::invalid("give the version to mark as applied, not 0"));
    };
    let version = version_of(&embedded[idx]);
    conn.immediate_transaction(|conn| {
        diesel::migration::MigrationConnection::setup(conn)?;
        if applied(conn)?.iter().any(|(v, _)| *v == version) {
            return Err(Error::conflict(format!("migration {version} is already applied")));
        }
        sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES (?)")
            .bind::<Text, _>(&version)
            .execute(conn)?;
        Ok(())
    })?;
    tracing::warn!(version = %version, "migration marked as applied without running it");
    report(conn, vec![version], vec![])
}
