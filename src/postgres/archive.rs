//! Archive and restore primitives ([`crate::archive::Store`]) on PostgreSQL: persistence only; what is archived,
//! verified, deleted and restored is decided in `src/archive/run.rs`.
//!
//! Everything runs on raw tokio-postgres clients taken from the connection budget (the cleanup's
//! [`Session`]), in binary: rows are read and written with the server's binary formats (timestamps as
//! microseconds, ids as UUIDs), and imports go through binary `COPY`, the fastest way into PostgreSQL.
//!
//! - **Scan.** A keyset page in `(started_at, id)` order of the rows the selection covers (final statuses only:
//!   an archive never selects unfinished executions), then the page's events in one query bounded by the page's
//!   `execution_started_at` range so only the partitions it spans are read. Both in one `REPEATABLE READ READ
//!   ONLY` transaction: the events belong to exactly the executions read. Audit entries page on
//!   `(timestamp, id)`.
//! - **Delete by id.** One short transaction per call, like a cleanup batch (same `lock_timeout`, same retries):
//!   lock the executions that are present and final (`FOR UPDATE`: an event append holds its execution's row
//!   lock), delete their events (pruned to their `execution_started_at` range), delete them. Absent or unfinished
//!   ids are left alone, so deleting twice is harmless.
//! - **Import.** The month partitions the rows need are created first (the partition function, under the
//!   partition keeper's advisory lock, in its own short transaction), so nothing lands in a default partition.
//!   Then one transaction: binary `COPY` into session temp tables, and one statement inserting the executions
//!   whose id is nowhere in `executions` (any month) and the events of exactly those. The primary key of the
//!   partitioned table is `(id, started_at)` (no unique index on the id alone is possible), so the id check is
//!   made race-free by an advisory lock all imports take ([`IMPORT_LOCK`]), and `ON CONFLICT DO NOTHING` covers
//!   a writer inserting the same key meanwhile. `search_vector` is a generated column: restored rows are
//!   searchable as soon as they commit.

use std::{
    collections::{HashMap, HashSet},
    error::Error as StdError,
};

use bytes::BytesMut;
use diesel::data_types::PgTimestamp;
use futures_util::pin_mut;
use ipnetwork::IpNetwork;
use parallax_storage_abi::{
    retention::CleanupTarget, AuditEntry, EventKind, Execution, ExecutionEvent, ExecutionStatus,
};
use postgres_protocol::types as proto;
use tokio_postgres::{
    binary_copy::BinaryCopyInWriter,
    types::{to_sql_checked, FromSql, IsNull, ToSql, Type},
    Client, Row,
};
use uuid::Uuid;

use super::{
    copy::JsonbText,
    models::{from_pg, to_pg},
    partitions::PARTITION_LOCK,
    retention::{final_list, when_lock_waits, Session, Step, BATCH_ATTEMPTS, BATCH_LOCK_TIMEOUT},
    PostgresBackend,
};
use crate::{
    archive::{Deleted, ExecutionRecord, Imported, Store},
    error::{Error, Result},
    rules::{Key, Selection},
};

/// Key of the advisory lock every import of executions takes for its transaction ("plx-impt"): the check that
/// an id is nowhere in `executions` and the insert are then one atomic step for imports.
pub const IMPORT_LOCK: i64 = 0x706c_782d_696d_7074;

/// The columns of an execution as scanned, in [`execution_of`]'s order.
pub(super) const EXECUTION_COLUMNS: &str =
    "id, pattern_name, pattern_version, status, input, output, error, started_at, \
     completed_at, duration_ms, metadata, tags";

pub(super) const AUDIT_COLUMNS: &str =
    "id, timestamp, action, actor, resource_type, resource_id, details, ip_address, user_agent";

/// A `timestamptz` as microseconds since 1970 (UTC), in the binary format: exact, no text conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct At(pub(super) i64);

impl ToSql for At {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        proto::timestamp_to_sql(to_pg(self.0).0, out);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for At {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<At, Box<dyn StdError + Sync + Send>> {
        Ok(At(from_pg(PgTimestamp(proto::timestamp_from_sql(raw)?))))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// A JSONB document as the other reads of this backend give it (`serde_json::Value` text, so a scanned row is
/// exactly what `get_execution` returns).
struct Doc(String);

fn jsonb_text(raw: &[u8]) -> std::result::Result<&[u8], Box<dyn StdError + Sync + Send>> {
    match raw.split_first() {
        Some((1, text)) => Ok(text),
        _ => Err("unsupported JSONB binary format version".into()),
    }
}

impl<'a> FromSql<'a> for Doc {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Doc, Box<dyn StdError + Sync + Send>> {
        let v: serde_json::Value = serde_json::from_slice(jsonb_text(raw)?)?;
        Ok(Doc(v.to_string()))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
}

/// The `tags` JSONB array.
struct Tags(Vec<String>);

impl<'a> FromSql<'a> for Tags {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Tags, Box<dyn StdError + Sync + Send>> {
        Ok(Tags(serde_json::from_slice(jsonb_text(raw)?)?))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
}

/// An INET value as the other reads give it: a host address without its /32 or /128, a network with its prefix.
struct Inet(String);

impl<'a> FromSql<'a> for Inet {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Inet, Box<dyn StdError + Sync + Send>> {
        let inet = proto::inet_from_sql(raw)?;
        let n = IpNetwork::new(inet.addr(), inet.netmask())?;
        let host = n.prefix() == if n.is_ipv4() { 32 } else { 128 };
        Ok(Inet(if host { n.ip().to_string() } else { n.to_string() }))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INET
    }
}

pub(super) fn uuid_of(what: &str, text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::invalid(format!("{what} id {text:?} is not a UUID")))
}

pub(super) fn ids_of(what: &str, ids: &[String]) -> Result<Vec<Uuid>> {
    ids.iter().map(|i| uuid_of(what, i)).collect()
}

pub(super) fn decoded(e: tokio_postgres::Error, what: &str) -> Error {
    let detail = e.source().map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
    Error::internal(format!("reading {what}: {detail}"))
}

fn opt_doc(
    r: &Row,
    i: usize,
) -> std::result::Result<abi_stable::std_types::ROption<abi_stable::std_types::RString>, tokio_postgres::Error>
{
    Ok(r.try_get::<_, Option<Doc>>(i)?.map(|d| d.0.into()).into())
}

fn opt_text(
    r: &Row,
    i: usize,
) -> std::result::Result<abi_stable::std_types::ROption<abi_stable::std_types::RString>, tokio_postgres::Error>
{
    Ok(r.try_get::<_, Option<String>>(i)?.map(Into::into).into())
}

/// An execution from the columns of [`EXECUTION_COLUMNS`].
pub(super) fn execution_of(r: &Row) -> Result<Execution> {
    let read = || -> std::result::Result<Execution, tokio_postgres::Error> {
        let status: String = r.try_get(3)?;
        Ok(Execution {
            id: r.try_get::<_, Uuid>(0)?.hyphenated().to_string().into(),
            pattern_name: r.try_get::<_, String>(1)?.into(),
            pattern_version: r.try_get::<_, String>(2)?.into(),
            // Checked below (an unknown status is not a decoding error of the driver).
            status: ExecutionStatus::parse(&status).unwrap_or(ExecutionStatus::Pending),
            input: opt_doc(r, 4)?,
            output: opt_doc(r, 5)?,
            error: opt_doc(r, 6)?,
            started_at: r.try_get::<_, At>(7)?.0,
            completed_at: r.try_get::<_, Option<At>>(8)?.map(|a| a.0).into(),
            duration_ms: r.try_get::<_, Option<i64>>(9)?.into(),
            metadata: opt_doc(r, 10)?,
            tags: r.try_get::<_, Tags>(11)?.0.into_iter().map(Into::into).collect(),
        })
    };
    let e = read().map_err(|e| decoded(e, "an execution to archive"))?;
    let status: &str = r.get(3);
    if ExecutionStatus::parse(status).is_none() {
        return Err(Error::internal(format!(
            "execution {}: unknown status {status:?} in the database",
            e.id
        )));
    }
    Ok(e)
}

/// An event from `execution_id, id, seq, kind, payload, recorded_at` (columns 0-5).
fn event_of(r: &Row) -> Result<ExecutionEvent> {
    let read = || -> std::result::Result<(ExecutionEvent, String), tokio_postgres::Error> {
        let kind: String = r.try_get(3)?;
        Ok((
            ExecutionEvent {
                execution_id: r.try_get::<_, Uuid>(0)?.hyphenated().to_string().into(),
                id: r.try_get::<_, Uuid>(1)?.hyphenated().to_string().into(),
                seq: r.try_get(2)?,
                kind: EventKind::parse(&kind).unwrap_or(EventKind::StepResult),
                payload: r.try_get::<_, Doc>(4)?.0.into(),
                recorded_at: r.try_get::<_, At>(5)?.0,
            },
            kind,
        ))
    };
    let (e, kind) = read().map_err(|e| decoded(e, "an event to archive"))?;
    if EventKind::parse(&kind).is_none() {
        return Err(Error::internal(format!("event {}: unknown kind {kind:?} in the database", e.id)));
    }
    Ok(e)
}

/// An audit entry from the columns of [`AUDIT_COLUMNS`].
pub(super) fn audit_of(r: &Row) -> Result<AuditEntry> {
    let read = || -> std::result::Result<AuditEntry, tokio_postgres::Error> {
        Ok(AuditEntry {
            id: r.try_get::<_, Uuid>(0)?.hyphenated().to_string().into(),
            timestamp: r.try_get::<_, At>(1)?.0,
            action: r.try_get::<_, String>(2)?.into(),
            actor: opt_text(r, 3)?,
            resource_type: opt_text(r, 4)?,
            resource_id: opt_text(r, 5)?,
            details: opt_doc(r, 6)?,
            ip_address: r.try_get::<_, Option<Inet>>(7)?.map(|i| i.0.into()).into(),
            user_agent: opt_text(r, 8)?,
        })
    };
    read().map_err(|e| decoded(e, "an audit entry to archive"))
}

/// The events of the executions `$1` (ids) whose `started_at` lies in `[$2, $3]` (only those partitions are
/// read), in `seq` order, in the columns [`records_of`] takes.
pub(super) const EVENTS_OF: &str =
    "SELECT execution_id, id, seq, kind, payload, recorded_at, execution_started_at \
     FROM execution_events WHERE execution_id = ANY($1) AND execution_started_at >= $2 \
     AND execution_started_at <= $3 ORDER BY execution_id, seq";

/// Records from executions read in [`EXECUTION_COLUMNS`] and their events read with [`EVENTS_OF`]: each
/// execution gets the events of its id in its month, in the order read.
pub(super) fn records_of(rows: &[Row], ev: &[Row]) -> Result<Vec<ExecutionRecord>> {
    let mut records = Vec::with_capacity(rows.len());
    let mut at: HashMap<Uuid, (usize, i64)> = HashMap::with_capacity(rows.len());
    for r in rows {
        let execution = execution_of(r)?;
        at.insert(r.get(0), (records.len(), execution.started_at));
        records.push(ExecutionRecord { execution, events: Vec::new() });
    }
    for r in ev {
        let execution_id: Uuid = r.get(0);
        let started: At = r.try_get(6).map_err(|e| decoded(e, "an event to archive"))?;
        // Only the events of the execution read (its id in its month).
        if let Some(&(i, t)) = at.get(&execution_id) {
            if t == started.0 {
                records[i].events.push(event_of(r)?);
            }
        }
    }
    Ok(records)
}

/// The limit key of a selection: `(time, id)`.
fn limit_of(sel: &Selection) -> Result<(At, Uuid)> {
    Ok((At(sel.before.0), uuid_of("cleanup limit", &sel.before.1)?))
}

fn after_of(after: &Option<Key>) -> Result<Option<(At, Uuid)>> {
    after.as_ref().map(|(t, id)| Ok((At(*t), uuid_of("scan cursor", id)?))).transpose()
}

fn timed_out(what: &str) -> Error {
    Error::new(
        parallax_storage_abi::ErrorKind::Timeout,
        format!(
            "{what}: rows stayed locked by other sessions through {BATCH_ATTEMPTS} attempts (lock_timeout \
             {BATCH_LOCK_TIMEOUT} each); run it again later"
        ),
    )
}

/// The retries of a transaction whose lock wait timed out, as a cleanup batch does them: the same
/// `lock_timeout` ([`BATCH_LOCK_TIMEOUT`]), attempts ([`BATCH_ATTEMPTS`]) and backoff.
pub(super) struct Retry {
    attempt: u32,
    what: &'static str,
}

impl Retry {
    pub(super) fn new(what: &'static str) -> Retry {
        Retry { attempt: 0, what }
    }

    /// The transaction's setup: the lock timeout, then `setup`.
    pub(super) fn setup(setup: &str) -> String {
        format!("SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'; {setup}")
    }

    /// `Some` when done; `None` after waiting to try again; the error once the attempts are spent.
    pub(super) async fn next<T>(&mut self, step: Step<T>) -> Result<Option<T>> {
        match step {
            Step::Done(v) => Ok(Some(v)),
            Step::LockTimeout if self.attempt + 1 < BATCH_ATTEMPTS => {
                self.attempt += 1;
                tokio::time::sleep(when_lock_waits(self.attempt)).await;
                Ok(None)
            }
            Step::LockTimeout => Err(timed_out(self.what)),
            Step::Skip(why) => Err(Error::internal(format!("{}: {why}", self.what))),
        }
    }
}

/// A binary `COPY … FROM STDIN` of `rows` into `table`.
async fn copy_rows(
    c: &Client,
    table: &str,
    types: &[Type],
    rows: impl Iterator<Item = Vec<&(dyn ToSql + Sync)>>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let sink = c.copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)")).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    pin_mut!(writer);
    for row in rows {
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// One execution ready for `COPY` into the import table.
struct ExecRow<'a> {
    id: Uuid,
    e: &'a Execution,
    status: &'static str,
    tags: String,
}

/// One event ready for `COPY`.
struct EventRow<'a> {
    id: Uuid,
    execution_id: Uuid,
    e: &'a ExecutionEvent,
    kind: &'static str,
    execution_started_at: At,
}

/// A document column's text.
fn doc(d: &abi_stable::std_types::ROption<abi_stable::std_types::RString>) -> Option<&str> {
    d.as_ref().map(|s| s.as_str()).into_option()
}

/// How [`PostgresBackend::import_records`] lands its records.
pub(super) enum ImportMode<'a> {
    /// Insert-if-absent by id (an import, a copy into a target that held rows).
    IfAbsent,
    /// `crate::transfer::Store::replace_unfinished`.
    Replace,
    /// `crate::transfer::Store::land_owned`: a binary `COPY` straight into `executions` and `execution_events`
    /// (no id is looked for) and the transfer state `(id, source, state JSON)` saved in the same transaction.
    Owned { id: Uuid, source: &'a str, state: &'a str },
}

fn month_of(micros: i64) -> (i16, i8) {
    let d = jiff::Timestamp::from_microsecond(micros).map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date());
    d.map(|d| (d.year(), d.month())).unwrap_or((0, 0))
}

impl PostgresBackend {
    /// Creates the monthly partitions (executions and events) holding these times that do not exist yet.
    async fn ensure_months(&self, s: &Session<'_>, times: &[i64]) -> Result<()> {
        let mut months: HashMap<(i16, i8), i64> = HashMap::new();
        for &t in times {
            months.entry(month_of(t)).or_insert(t);
        }
        let probes: Vec<At> = months.into_values().map(At).collect();
        let missing: Vec<At> = s
            .rows(
                "SELECT t FROM unnest($1::timestamptz[]) t \
                 WHERE to_regclass('executions_' || to_char(t AT TIME ZONE 'UTC', 'YYYY_MM')) IS NULL \
                 OR to_regclass('execution_events_' || to_char(t AT TIME ZONE 'UTC', 'YYYY_MM')) IS NULL",
                &[&probes],
                "looking for the month partitions an import needs",
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for month in missing {
            let mut retry = Retry::new("creating a month partition for restored executions");
            let made = loop {
                let step = s
                    .transaction(&Retry::setup(""), retry.what, async |c| {
                        c.query_one("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK]).await?;
                        // A relation lock makes this session process the catalog changes committed while it
                        // waited (an advisory lock does not): a partition another import just made is then seen,
                        // not created twice.
                        c.batch_execute("LOCK TABLE executions IN ACCESS SHARE MODE").await?;
                        let made: bool = c
                            .query_one("SELECT parallax_create_execution_partition($1)", &[&month])
                            .await?
                            .get(0);
                        Ok(Step::Done(made))
                    })
                    .await?;
                if let Some(made) = retry.next(step).await? {
                    break made;
                }
            };
            if made {
                let (y, m) = month_of(month.0);
                tracing::info!(month = %format!("{y:04}-{m:02}"), "created the partitions of a restored month");
            }
        }
        Ok(())
    }

    /// [`Store::import_executions`], or with `replace` the import of `crate::transfer::Store::replace_unfinished`:
    /// in the same transaction, after the import lock, the present executions with these ids that are pending
    /// or running are locked and deleted with their events, and only those are inserted again from the records
    /// (a final execution, or an absent id, is left alone). `inserted` counts the rows written.
    pub(super) async fn import_records(
        &self,
        records: Vec<ExecutionRecord>,
        mode: ImportMode<'_>,
    ) -> Result<Imported> {
        let replace = matches!(mode, ImportMode::Replace);
        let owned = match &mode {
            ImportMode::Owned { id, source, state } => Some((*id, *source, *state)),
            _ => None,
        };
        // Reads through this object must not miss the change on a replica (also after a failure or when the call
        // is dropped: what committed before stays).
        let _counted = self.counts_as_write();
        // Everything checked before anything is written; a record twice in the batch is imported once.
        let mut seen = HashSet::with_capacity(records.len());
        let mut execs = Vec::with_capacity(records.len());
        let mut events = Vec::new();
        for r in &records {
            let e = &r.execution;
            let id = uuid_of("execution", &e.id)?;
            if !seen.insert(id) {
                continue;
            }
            let tags: Vec<&str> = e.tags.iter().map(|t| t.as_str()).collect();
            let tags = serde_json::to_string(&tags).expect("strings serialize");
            execs.push(ExecRow { id, e, status: e.status.as_str(), tags });
            for v in &r.events {
                events.push(EventRow {
                    id: uuid_of("event", &v.id)?,
                    execution_id: id,
                    e: v,
                    kind: v.kind.as_str(),
                    execution_started_at: At(e.started_at),
                });
            }
        }
        if execs.is_empty() {
            return Ok(Imported::default());
        }
        // PostgreSQL cannot store a NUL: refused here naming the row, not by the batch's statement.
        super::transfer::check_storable(&records)?;
        let s = self.session().await?;
        let times: Vec<i64> = execs.iter().map(|x| x.e.started_at).collect();
        self.ensure_months(&s, &times).await?;

        let setup =
            "CREATE TEMP TABLE IF NOT EXISTS parallax_import_executions (id uuid, pattern_name text, \
             pattern_version text, status text, input text, output text, error text, started_at timestamptz, \
             completed_at timestamptz, duration_ms int8, metadata text, tags text) ON COMMIT DELETE ROWS; \
             CREATE TEMP TABLE IF NOT EXISTS parallax_import_events (id uuid, execution_id uuid, seq int8, \
             kind text, payload text, recorded_at timestamptz, execution_started_at timestamptz) \
             ON COMMIT DELETE ROWS";
        let insert = format!(
            "WITH x AS (INSERT INTO executions ({EXECUTION_COLUMNS}) \
             SELECT t.id, t.pattern_name, t.pattern_version, t.status, t.input::jsonb, t.output::jsonb, \
             t.error::jsonb, t.started_at, t.completed_at, t.duration_ms, t.metadata::jsonb, t.tags::jsonb \
             FROM parallax_import_executions t WHERE NOT EXISTS (SELECT 1 FROM executions e WHERE e.id = t.id) \
             ON CONFLICT DO NOTHING RETURNING id, started_at), \
             v AS (INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at, \
             execution_started_at) SELECT v.id, v.execution_id, v.seq, v.kind, v.payload::jsonb, v.recorded_at, \
             x.started_at FROM parallax_import_events v JOIN x ON x.id = v.execution_id \
             AND x.started_at = v.execution_started_at ORDER BY v.execution_id, v.seq \
             ON CONFLICT DO NOTHING RETURNING 1) \
             SELECT (SELECT count(*) FROM x), (SELECT count(*) FROM v)"
        );
        let exec_types = [
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
        ];
        let event_types = [
            Type::UUID,
            Type::UUID,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ];
        // Owned: the documents go straight into the `jsonb` columns.
        let mut owned_exec_types = exec_types.clone();
        for i in [4, 5, 6, 10, 11] {
            owned_exec_types[i] = Type::JSONB;
        }
        let mut owned_event_types = event_types.clone();
        owned_event_types[4] = Type::JSONB;
        let (exec_table, event_table, exec_types, event_types, setup) = match owned {
            Some(_) => (
                format!("executions ({EXECUTION_COLUMNS})"),
                "execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at)",
                &owned_exec_types,
                &owned_event_types,
                "",
            ),
            None => (
                "parallax_import_executions".to_string(),
                "parallax_import_events",
                &exec_types,
                &event_types,
                setup,
            ),
        };
        // Owned parameter values the COPY rows borrow.
        struct ExecParams<'a> {
            pattern_name: &'a str,
            pattern_version: &'a str,
            input: Option<&'a str>,
            output: Option<&'a str>,
            error: Option<&'a str>,
            started_at: At,
            completed_at: Option<At>,
            duration_ms: Option<i64>,
            metadata: Option<&'a str>,
            /// The documents (input, output, error, metadata, tags) as `jsonb`, for the owned mode.
            jsonb: [Option<JsonbText<'a>>; 5],
        }
        let params: Vec<ExecParams> = execs
            .iter()
            .map(|x| ExecParams {
                pattern_name: x.e.pattern_name.as_str(),
                pattern_version: x.e.pattern_version.as_str(),
                input: doc(&x.e.input),
                output: doc(&x.e.output),
                error: doc(&x.e.error),
                started_at: At(x.e.started_at),
                completed_at: x.e.completed_at.map(At).into_option(),
                duration_ms: x.e.duration_ms.into_option(),
                metadata: doc(&x.e.metadata),
                jsonb: [
                    doc(&x.e.input).map(JsonbText),
                    doc(&x.e.output).map(JsonbText),
                    doc(&x.e.error).map(JsonbText),
                    doc(&x.e.metadata).map(JsonbText),
                    Some(JsonbText(x.tags.as_str())),
                ],
            })
            .collect();
        let event_params: Vec<(At, &str, JsonbText)> = events
            .iter()
            .map(|v| (At(v.e.recorded_at), v.e.payload.as_str(), JsonbText(v.e.payload.as_str())))
            .collect();
        let ids: Vec<Uuid> = execs.iter().map(|x| x.id).collect();
        let is_owned = owned.is_some();
        let mut retry = Retry::new(match mode {
            ImportMode::Replace => "replacing unfinished executions",
            ImportMode::Owned { .. } => "copying executions into the target",
            ImportMode::IfAbsent => "restoring executions",
        });
        let (inserted, events_inserted) = loop {
            let step = s
                .transaction(&Retry::setup(setup), retry.what, async |c| {
                    c.query_one("SELECT pg_advisory_xact_lock($1)", &[&IMPORT_LOCK]).await?;
                    copy_rows(
                        c,
                        &exec_table,
                        exec_types,
                        execs.iter().zip(&params).map(|(x, p)| -> Vec<&(dyn ToSql + Sync)> {
                            let [input, output, error, metadata, tags] = &p.jsonb;
                            if is_owned {
                                vec![
                                    &x.id,
                                    &p.pattern_name,
                                    &p.pattern_version,
                                    &x.status,
                                    input,
                                    output,
                                    error,
                                    &p.started_at,
                                    &p.completed_at,
                                    &p.duration_ms,
                                    metadata,
                                    tags,
                                ]
                            } else {
                                vec![
                                    &x.id,
                                    &p.pattern_name,
                                    &p.pattern_version,
                                    &x.status,
                                    &p.input,
                                    &p.output,
                                    &p.error,
                                    &p.started_at,
                                    &p.completed_at,
                                    &p.duration_ms,
                                    &p.metadata,
                                    &x.tags,
                                ]
                            }
                        }),
                    )
                    .await?;
                    if !events.is_empty() {
                        copy_rows(
                            c,
                            event_table,
                            event_types,
                            events.iter().zip(&event_params).map(
                                |(v, (at, payload, jsonb))| -> Vec<&(dyn ToSql + Sync)> {
                                    let payload: &(dyn ToSql + Sync) = if is_owned { jsonb } else { payload };
                                    vec![
                                        &v.id,
                                        &v.execution_id,
                                        &v.e.seq,
                                        &v.kind,
                                        payload,
                                        at,
                                        &v.execution_started_at,
                                    ]
                                },
                            ),
                        )
                        .await?;
                    }
                    if let Some((id, source, state)) = owned {
                        // Every row of the page and the state whose cursor is past it: one commit.
                        c.execute(super::transfer::SAVE_STATE, &[&id, &source, &state]).await?;
                        return Ok(Step::Done((execs.len() as u64, events.len() as u64)));
                    }
                    if replace && !super::transfer::clear_unfinished(c, &ids).await? {
                        return Ok(Step::Done((0, 0)));
                    }
                    let r = c.query_one(&insert, &[]).await?;
                    Ok(Step::Done((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)))
                })
                .await?;
            if let Some(v) = retry.next(step).await? {
                break v;
            }
        };
        Ok(Imported { inserted, skipped: records.len() as u64 - inserted, events_inserted })
    }
}

impl Store for PostgresBackend {
    async fn scan_executions(
        &self,
        sel: Selection,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>> {
        if limit == 0 || !matches!(sel.target, CleanupTarget::Executions) {
            return Ok(Vec::new());
        }
        let (before_at, before_id) = limit_of(&sel)?;
        let after = after_of(&after)?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let statuses =
            if sel.include_unfinished { String::new() } else { format!(" AND status IN ({})", final_list()) };
        // The plain `started_at` bounds let the planner prune partitions (a row comparison does not).
        let page = match after {
            None => format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions WHERE started_at <= $1 AND (started_at, id) < ($1, $2)\
                 {statuses} ORDER BY started_at, id LIMIT $3"
            ),
            Some(_) => format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions WHERE started_at <= $1 AND (started_at, id) < ($1, $2)\
                 {statuses} AND started_at >= $4 AND (started_at, id) > ($4, $5) ORDER BY started_at, id LIMIT $3"
            ),
        };
        let events = EVENTS_OF;
        let s = self.session().await?;
        let step = s
            .transaction(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                "reading executions to archive",
                async |c| {
                    let rows = match &after {
                        None => c.query(&page, &[&before_at, &before_id, &limit]).await?,
                        Some((t, id)) => c.query(&page, &[&before_at, &before_id, &limit, t, id]).await?,
                    };
                    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                        return Ok(Step::Done((rows, Vec::new())));
                    };
                    let (lo, hi): (At, At) = (first.try_get(7)?, last.try_get(7)?);
                    let ids: Vec<Uuid> =
                        rows.iter().map(|r| r.try_get(0)).collect::<std::result::Result<_, _>>()?;
                    let ev = c.query(events, &[&ids, &lo, &hi]).await?;
                    Ok(Step::Done((rows, ev)))
                },
            )
            .await?;
        let Step::Done((rows, ev)) = step else {
            return Err(Error::new(
                parallax_storage_abi::ErrorKind::Timeout,
                "reading executions to archive: the statement was cancelled (statement_timeout?)",
            ));
        };
        records_of(&rows, &ev)
    }

    async fn scan_audit(&self, sel: Selection, after: Option<Key>, limit: usize) -> Result<Vec<AuditEntry>> {
        if limit == 0 || !matches!(sel.target, CleanupTarget::AuditLogs) {
            return Ok(Vec::new());
        }
        let (before_at, before_id) = limit_of(&sel)?;
        let after = after_of(&after)?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let s = self.session().await?;
        let rows = match &after {
            None => {
                s.rows(
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE (timestamp, id) < ($1, $2) \
                         ORDER BY timestamp, id LIMIT $3"
                    ),
                    &[&before_at, &before_id, &limit],
                    "reading audit entries to archive",
                )
                .await?
            }
            Some((t, id)) => {
                s.rows(
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE (timestamp, id) < ($1, $2) \
                         AND (timestamp, id) > ($4, $5) ORDER BY timestamp, id LIMIT $3"
                    ),
                    &[&before_at, &before_id, &limit, t, id],
                    "reading audit entries to archive",
                )
                .await?
            }
        };
        rows.iter().map(audit_of).collect()
    }

    async fn delete_executions(&self, ids: Vec<String>) -> Result<Deleted> {
        // Reads through this object must not miss the change on a replica (also after a failure or when the call
        // is dropped: what committed before stays).
        let _counted = self.counts_as_write();
        let ids = ids_of("execution", &ids)?;
        if ids.is_empty() {
            return Ok(Deleted::default());
        }
        let finals = final_list();
        let lock = format!(
            "SELECT id, started_at FROM executions WHERE id = ANY($1) AND status IN ({finals}) FOR UPDATE"
        );
        let del_events = "DELETE FROM execution_events WHERE execution_id = ANY($1) \
             AND execution_started_at >= $2 AND execution_started_at <= $3";
        let del_execs = format!(
            "DELETE FROM executions WHERE id = ANY($1) AND started_at >= $2 AND started_at <= $3 \
             AND status IN ({finals})"
        );
        let s = self.session().await?;
        let mut retry = Retry::new("deleting archived executions");
        loop {
            let step = s
                .transaction(&Retry::setup(""), retry.what, async |c| {
                    let rows = c.query(&lock, &[&ids]).await?;
                    let mut locked = Vec::with_capacity(rows.len());
                    let (mut lo, mut hi) = (At(i64::MAX), At(i64::MIN));
                    for r in &rows {
                        let at: At = r.try_get(1)?;
                        (lo, hi) = (lo.min(at), hi.max(at));
                        locked.push(r.try_get::<_, Uuid>(0)?);
                    }
                    if locked.is_empty() {
                        return Ok(Step::Done(Deleted::default()));
                    }
                    let events = c.execute(del_events, &[&locked, &lo, &hi]).await?;
                    let rows = c.execute(&del_execs, &[&locked, &lo, &hi]).await?;
                    Ok(Step::Done(Deleted { rows, events }))
                })
                .await?;
            if let Some(d) = retry.next(step).await? {
                return Ok(d);
            }
        }
    }

    async fn delete_audit(&self, ids: Vec<String>) -> Result<Deleted> {
        // Reads through this object must not miss the change on a replica (also after a failure or when the call
        // is dropped: what committed before stays).
        let _counted = self.counts_as_write();
        let ids = ids_of("audit entry", &ids)?;
        if ids.is_empty() {
            return Ok(Deleted::default());
        }
        let s = self.session().await?;
        let rows = s
            .client()
            .execute("DELETE FROM audit_logs WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(|e| s.fail(e, "deleting archived audit entries"))?;
        Ok(Deleted { rows, events: 0 })
    }

    async fn import_executions(&self, records: Vec<ExecutionRecord>) -> Result<Imported> {
        self.import_records(records, ImportMode::IfAbsent).await
    }

    async fn import_audit(&self, entries: Vec<AuditEntry>) -> Result<Imported> {
        // Reads through this object must not miss the change on a replica (also after a failure or when the call
        // is dropped: what committed before stays).
        let _counted = self.counts_as_write();
        let mut seen = HashSet::with_capacity(entries.len());
        let mut rows = Vec::with_capacity(entries.len());
        for a in &entries {
            let id = uuid_of("audit entry", &a.id)?;
            if seen.insert(id) {
                rows.push((id, a, At(a.timestamp)));
            }
        }
        if rows.is_empty() {
            return Ok(Imported::default());
        }
        super::transfer::check_storable_audit(&entries)?;
        // The entries as they will read back (the INET column's text form), for their hashes.
        let stored: Vec<AuditEntry> = rows
            .iter()
            .map(|(_, a, _)| {
                let mut e = (*a).clone();
                if let Some(n) = e.ip_address.as_ref().into_option().and_then(|t| t.parse::<IpNetwork>().ok())
                {
                    e.ip_address = abi_stable::std_types::RSome(super::models::ip_text(n).into());
                }
                e
            })
            .collect();
        let ids: Vec<Uuid> = rows.iter().map(|(id, _, _)| *id).collect();
        let setup =
            "CREATE TEMP TABLE IF NOT EXISTS parallax_import_audit_chained (id uuid, timestamp timestamptz, \
             action text, actor text, resource_type text, resource_id text, details text, ip_address text, \
             user_agent text, chain_seq int8, chain_prev bytea, chain_hash bytea) ON COMMIT DELETE ROWS";
        let insert = format!(
            "WITH x AS (INSERT INTO audit_logs ({AUDIT_COLUMNS}, chain_seq, chain_prev, chain_hash) SELECT t.id, \
             t.timestamp, t.action, t.actor, t.resource_type, t.resource_id, t.details::jsonb, t.ip_address::inet, \
             t.user_agent, t.chain_seq, t.chain_prev, t.chain_hash FROM parallax_import_audit_chained t \
             ON CONFLICT (id) DO NOTHING RETURNING 1) SELECT count(*) FROM x"
        );
        let types = [
            Type::UUID,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::BYTEA,
            Type::BYTEA,
        ];
        let opts: Vec<[Option<&str>; 7]> = rows
            .iter()
            .map(|(_, a, _)| {
                fn o(v: &abi_stable::std_types::ROption<abi_stable::std_types::RString>) -> Option<&str> {
                    v.as_ref().map(|s| s.as_str()).into_option()
                }
                [
                    Some(a.action.as_str()),
                    o(&a.actor),
                    o(&a.resource_type),
                    o(&a.resource_id),
                    o(&a.details),
                    o(&a.ip_address),
                    o(&a.user_agent),
                ]
            })
            .collect();
        let s = self.session().await?;
        let mut retry = Retry::new("restoring audit entries");
        let inserted = loop {
            let step = s
                .transaction(&Retry::setup(setup), retry.what, async |c| {
                    // The head record locked first: appends and other imports wait, so the ids found absent
                    // below stay absent, and the entries inserted are chained contiguously after the head.
                    let Some((mut head, _)) = super::chain::lock_head(c).await? else {
                        return Ok(Step::Skip(super::chain::NO_HEAD));
                    };
                    let present: HashSet<Uuid> = c
                        .query("SELECT id FROM audit_logs WHERE id = ANY($1)", &[&ids])
                        .await?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    let absent: Vec<usize> = (0..rows.len()).filter(|&i| !present.contains(&rows[i].0)).collect();
                    if absent.is_empty() {
                        return Ok(Step::Done(0));
                    }
                    let links = crate::audit_chain::extend(&mut head, absent.iter().map(|&i| &stored[i]));
                    let chain: Vec<(i64, &[u8], &[u8])> =
                        links.iter().map(|l| (l.seq, l.prev.as_slice(), l.hash.as_slice())).collect();
                    copy_rows(
                        c,
                        "parallax_import_audit_chained",
                        &types,
                        absent.iter().zip(&chain).map(|(&i, (seq, prev, hash))| -> Vec<&(dyn ToSql + Sync)> {
                            let ((id, _, at), o) = (&rows[i], &opts[i]);
                            vec![id, at, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], seq, prev, hash]
                        }),
                    )
                    .await?;
                    let r = c.query_one(&insert, &[]).await?;
                    let n = r.get::<_, i64>(0) as u64;
                    if n != absent.len() as u64 {
                        // Only a writer around the plugin (which takes no head lock) can get here: storing the
                        // rest would leave a hole in the chain.
                        return Ok(Step::Skip(
                            "an entry of the batch was written meanwhile around the plugin (without the audit \
                             chain's lock); nothing was stored: retry",
                        ));
                    }
                    super::chain::set_head(c, &head).await?;
                    Ok(Step::Done(n))
                })
                .await?;
            if let Some(v) = retry.next(step).await? {
                break v;
            }
        };
        Ok(Imported { inserted, skipped: entries.len() as u64 - inserted, events_inserted: 0 })
    }
}

#[cfg(test)]
use super::test_pg;

#[cfg(test)]
pub(super) mod tests {
    use abi_stable::std_types::{ROption, RString};
    use parallax_storage_abi::OpenOptions;
    use serde_json::json;

    use super::*;
    use crate::{
        archive::{ArchiveState, Phase},
        contract::Contract,
        retention::{Run, RunStatus, Store as _, Trigger},
        rules::MIN_ID,
    };

    /// A backend on a fresh database, and a plain client on the same database.
    pub(in crate::postgres) async fn backend() -> (PostgresBackend, tokio_postgres::Client) {
        let server = test_pg::server();
        let db = server.fresh_database().await;
        let cfg = crate::config::parse(&server.storage_config(&db).to_string()).unwrap();
        let b = PostgresBackend::open(cfg, OpenOptions::default()).await.unwrap();
        (b, server.client(&db).await)
    }

    pub(in crate::postgres) fn micros(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_microsecond()
    }

    pub(in crate::postgres) fn some(v: serde_json::Value) -> ROption<RString> {
        ROption::RSome(v.to_string().into())
    }

    /// Execution `i` started at `at`, with `events` events; documents hold the word `word<i>` for search.
    pub(in crate::postgres) fn record(
        i: u128,
        at: i64,
        status: ExecutionStatus,
        events: i64,
    ) -> ExecutionRecord {
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i).to_string();
        let done = status.is_final();
        ExecutionRecord {
            execution: Execution {
                id: id.clone().into(),
                pattern_name: format!("pattern-{}", i % 3).into(),
                pattern_version: "1.0.0".into(),
                status,
                input: some(
                    json!({"text": format!("word{i} input"), "n": i as u64, "nested": {"b": [1, 2], "a": null}}),
                ),
                output: if done { some(json!({"ok": true, "text": "zebra"})) } else { ROption::RNone },
                error: ROption::RNone,
                started_at: at,
                completed_at: if done { ROption::RSome(at + 1_500_123) } else { ROption::RNone },
                duration_ms: if done { ROption::RSome(1500) } else { ROption::RNone },
                metadata: some(json!({"source": "test", "ü": "ß"})),
                tags: vec!["b".into(), "a".into()].into(),
            },
            events: (1..=events)
                .map(|seq| ExecutionEvent {
                    id: Uuid::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 + i * 1000 + seq as u128)
                        .to_string()
                        .into(),
                    execution_id: id.clone().into(),
                    seq,
                    kind: if seq % 2 == 1 { EventKind::AgentAssignment } else { EventKind::StepResult },
                    payload: json!({"step": seq, "agent": "a1"}).to_string().into(),
                    recorded_at: at + seq * 1_000 + 7,
                })
                .collect(),
        }
    }

    fn selection(target: CleanupTarget, before: &str) -> Selection {
        Selection { target, before: (micros(before), MIN_ID.to_string()), include_unfinished: false }
    }

    pub(in crate::postgres) async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
        c.query_one(sql, &[]).await.unwrap().get(0)
    }

    async fn scan_all(b: &PostgresBackend, sel: &Selection, page: usize) -> Vec<ExecutionRecord> {
        let mut all: Vec<ExecutionRecord> = Vec::new();
        loop {
            let after = all.last().map(|r| (r.execution.started_at, r.execution.id.to_string()));
            let got = b.scan_executions(sel.clone(), after, page).await.unwrap();
            assert!(got.len() <= page);
            if got.is_empty() {
                return all;
            }
            all.extend(got);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_import_makes_old_months_and_reads_back_exactly() {
        let (b, c) = backend().await;
        let records: Vec<ExecutionRecord> = (0..7)
            .map(|i| {
                let at = if i < 4 {
                    micros("2019-03-10T12:00:00.123456Z") + i as i64
                } else {
                    micros("2019-05-31T23:59:59.999999Z")
                };
                record(i, at, ExecutionStatus::Completed, i as i64 % 3)
            })
            .collect();
        let events: u64 = records.iter().map(|r| r.events.len() as u64).sum();
        let got = b.import_executions(records.clone()).await.unwrap();
        assert_eq!(got, Imported { inserted: 7, skipped: 0, events_inserted: events });

        // The months were made (both tables); nothing sits in a default partition.
        for t in [
            "executions_2019_03",
            "execution_events_2019_03",
            "executions_2019_05",
            "execution_events_2019_05",
        ] {
            let n =
                count(&c, &format!("SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass('{t}')"))
                    .await;
            assert_eq!(n, 1, "{t} is an attached partition");
        }
        assert_eq!(count(&c, "SELECT count(*) FROM executions_default").await, 0);
        assert_eq!(count(&c, "SELECT count(*) FROM execution_events_default").await, 0);
        assert_eq!(count(&c, "SELECT count(*) FROM executions_2019_05").await, 3);

        // Scanned back exactly (in (started_at, id) order, whatever the page size), and read back by the
        // ordinary calls the same way.
        let mut expected = records.clone();
        expected.sort_by(|a, b| {
            (a.execution.started_at, a.execution.id.as_str())
                .cmp(&(b.execution.started_at, b.execution.id.as_str()))
        });
        let sel = selection(CleanupTarget::Executions, "2020-01-01T00:00:00Z");
        assert_eq!(scan_all(&b, &sel, 1000).await, expected);
        assert_eq!(scan_all(&b, &sel, 2).await, expected);
        assert_eq!(scan_all(&b, &sel, 1).await, expected);
        // The limit is exclusive: only the March rows are below May.
        let march = scan_all(&b, &selection(CleanupTarget::Executions, "2019-05-01T00:00:00Z"), 3).await;
        assert_eq!(march, expected[..4].to_vec());
        for r in &records {
            assert_eq!(b.get_execution(r.execution.id.to_string()).await.unwrap(), r.execution);
            assert_eq!(b.list_events(r.execution.id.to_string()).await.unwrap(), r.events);
        }
        // Restored rows are searchable (the generated column).
        let hits = b
            .search_executions(vec!["word5".into()], crate::validate::Page { limit: 10, after: None })
            .await
            .unwrap();
        assert_eq!(
            hits.iter().map(|h| h.0.id.to_string()).collect::<Vec<_>>(),
            vec![records[5].execution.id.to_string()]
        );

        // Again: every record is skipped whole, nothing changes.
        let again = b.import_executions(records.clone()).await.unwrap();
        assert_eq!(again, Imported { inserted: 0, skipped: 7, events_inserted: 0 });
        assert_eq!(count(&c, "SELECT count(*) FROM executions").await, 7);
        assert_eq!(count(&c, "SELECT count(*) FROM execution_events").await, events as i64);

        // An id present in another month is present: skipped, not imported a second time.
        let mut moved = records[0].clone();
        moved.execution.started_at = micros("2018-07-01T00:00:00Z");
        moved.execution.completed_at = ROption::RSome(micros("2018-07-01T00:00:01Z"));
        let got = b
            .import_executions(vec![
                moved,
                record(100, micros("2019-03-11T00:00:00Z"), ExecutionStatus::Failed, 1),
            ])
            .await
            .unwrap();
        assert_eq!(got, Imported { inserted: 1, skipped: 1, events_inserted: 1 });
        assert_eq!(
            count(&c, &format!("SELECT count(*) FROM executions WHERE id = '{}'", records[0].execution.id))
                .await,
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_imports_of_the_same_records_insert_each_once() {
        let (b, c) = backend().await;
        let b = std::sync::Arc::new(b);
        let records: Vec<ExecutionRecord> = (0..300)
            .map(|i| {
                record(
                    i,
                    micros("2019-01-01T00:00:00Z") + i as i64 * 3_600_000_000 * 7,
                    ExecutionStatus::Completed,
                    2,
                )
            })
            .collect();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (b, records) = (b.clone(), records.clone());
                tokio::spawn(async move { b.import_executions(records).await.unwrap() })
            })
            .collect();
        let mut inserted = 0;
        for t in tasks {
            let got = t.await.unwrap();
            assert_eq!(got.inserted + got.skipped, 300);
            inserted += got.inserted;
        }
        assert_eq!(inserted, 300, "each record inserted by exactly one import");
        assert_eq!(count(&c, "SELECT count(*) FROM executions").await, 300);
        assert_eq!(count(&c, "SELECT count(DISTINCT id) FROM executions").await, 300);
        assert_eq!(count(&c, "SELECT count(*) FROM execution_events").await, 600);
        assert_eq!(count(&c, "SELECT count(*) FROM executions_default").await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deletes_take_only_final_executions_and_can_be_repeated() {
        let (b, c) = backend().await;
        let at = micros("2019-02-01T00:00:00Z");
        let records = vec![
            record(1, at, ExecutionStatus::Completed, 3),
            record(2, at + 1, ExecutionStatus::Running, 2),
            record(3, micros("2019-04-01T00:00:00Z"), ExecutionStatus::Cancelled, 1),
            record(4, at + 2, ExecutionStatus::Failed, 0),
        ];
        b.import_executions(records.clone()).await.unwrap();
        let mut ids: Vec<String> = records.iter().map(|r| r.execution.id.to_string()).collect();
        ids.push(Uuid::from_u128(42).to_string());
        let d = b.delete_executions(ids.clone()).await.unwrap();
        assert_eq!(d, Deleted { rows: 3, events: 4 });
        assert_eq!(count(&c, "SELECT count(*) FROM executions").await, 1);
        assert_eq!(count(&c, "SELECT count(*) FROM execution_events").await, 2);
        assert_eq!(b.get_execution(records[1].execution.id.to_string()).await.unwrap(), records[1].execution);
        assert_eq!(b.delete_executions(ids).await.unwrap(), Deleted::default());
        assert_eq!(b.delete_executions(Vec::new()).await.unwrap(), Deleted::default());
        let bad = b.delete_executions(vec!["not-a-uuid".into()]).await.unwrap_err();
        assert!(bad.to_string().contains("\"not-a-uuid\" is not a UUID"), "{bad}");
        // An unfinished execution is never scanned either.
        assert!(scan_all(&b, &selection(CleanupTarget::Executions, "2030-01-01T00:00:00Z"), 10)
            .await
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_entries_import_scan_and_delete() {
        let (b, c) = backend().await;
        let entry = |i: u128, at: &str, ip: Option<&str>| AuditEntry {
            id: Uuid::from_u128(0x0190_0000_0000_7000_a000_0000_0000_0000 + i).to_string().into(),
            timestamp: micros(at),
            action: "pattern.create".into(),
            actor: ROption::RSome(format!("user{i}").into()),
            resource_type: if i % 2 == 0 { ROption::RSome("pattern".into()) } else { ROption::RNone },
            resource_id: ROption::RNone,
            details: some(json!({"i": i as u64, "why": "test"})),
            ip_address: ip.map(RString::from).into(),
            user_agent: ROption::RSome("curl/8".into()),
        };
        let entries = vec![
            entry(1, "2019-01-01T00:00:00.000001Z", Some("10.0.0.1")),
            entry(2, "2019-01-01T00:00:00.000001Z", Some("10.1.0.0/16")),
            entry(3, "2019-06-01T00:00:00Z", Some("2001:db8::1")),
            entry(4, "2021-01-01T00:00:00Z", None),
        ];
        let mut twice = entries.clone();
        twice.push(entries[0].clone());
        assert_eq!(
            b.import_audit(twice).await.unwrap(),
            Imported { inserted: 4, skipped: 1, events_inserted: 0 }
        );
        assert_eq!(
            b.import_audit(entries.clone()).await.unwrap(),
            Imported { inserted: 0, skipped: 4, events_inserted: 0 }
        );
        let sel = selection(CleanupTarget::AuditLogs, "2020-01-01T00:00:00Z");
        let first = b.scan_audit(sel.clone(), None, 2).await.unwrap();
        assert_eq!(first, entries[..2].to_vec());
        let last = first.last().map(|a| (a.timestamp, a.id.to_string()));
        assert_eq!(b.scan_audit(sel.clone(), last, 2).await.unwrap(), entries[2..3].to_vec());
        let ids: Vec<String> = entries.iter().map(|a| a.id.to_string()).collect();
        assert_eq!(b.delete_audit(ids[..3].to_vec()).await.unwrap(), Deleted { rows: 3, events: 0 });
        assert_eq!(b.delete_audit(ids.clone()).await.unwrap(), Deleted { rows: 1, events: 0 });
        assert_eq!(count(&c, "SELECT count(*) FROM audit_logs").await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_records_keep_their_archive_state() {
        let (b, _c) = backend().await;
        let mut run = Run::start(Trigger::Manual, None);
        run.archive = Some(ArchiveState {
            target: CleanupTarget::Executions,
            destination: "s3://bucket/prefix/".into(),
            phase: Phase::Deleting,
            manifest: Some("executions/manifests/x.json".into()),
            objects_done: 3,
            keep: false,
            rows: [("executions".to_string(), 12)].into(),
        });
        b.save_run(run.clone()).await.unwrap();
        let plain = Run { started_at: run.started_at + 1, ..Run::start(Trigger::Manual, None) };
        b.save_run(plain.clone()).await.unwrap();
        assert_eq!(b.runs(10).await.unwrap(), vec![plain, run.clone()]);
        run.status = RunStatus::Succeeded;
        run.archive.as_mut().unwrap().phase = Phase::Done;
        b.save_run(run.clone()).await.unwrap();
        assert_eq!(b.runs(10).await.unwrap()[1], run);
    }
}
