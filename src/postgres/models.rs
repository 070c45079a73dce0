//! Row types of the PostgreSQL schema and their conversion to the boundary types. Timestamps are diesel's raw
//! `PgTimestamp` (microseconds since 2000-01-01), ids are `Uuid`, documents `serde_json::Value` (JSONB).

use abi_stable::std_types::{ROption, RString, RVec};
use diesel::{data_types::PgTimestamp, prelude::*};
use ipnetwork::IpNetwork;
use parallax_storage_abi::{
    AuditEntry, EventKind, Execution, ExecutionEvent, ExecutionStatus, NewAuditEntry, Pattern,
};
use serde_json::Value;
use uuid::Uuid;

use super::schema::{audit_logs, execution_events, executions, patterns};
use crate::error::{Error, Result};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET: i64 = 946_684_800_000_000;

pub fn to_pg(micros: i64) -> PgTimestamp {
    PgTimestamp(micros - PG_EPOCH_OFFSET)
}

pub fn from_pg(t: PgTimestamp) -> i64 {
    t.0 + PG_EPOCH_OFFSET
}

pub fn uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| Error::invalid(format!("{s:?} is not a UUID")))
}

/// JSON text that the adapter already validated.
pub fn json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::internal(format!("validated JSON failed to parse: {e}")))
}

fn ropt(o: Option<String>) -> ROption<RString> {
    o.map(RString::from).into()
}

fn ropt_json(o: Option<Value>) -> ROption<RString> {
    o.map(|v| RString::from(v.to_string())).into()
}

fn opt(o: &ROption<RString>) -> Option<String> {
    o.as_ref().map(|s| s.to_string()).into_option()
}

#[derive(Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = patterns, check_for_backend(diesel::pg::Pg))]
pub struct PatternRow {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub definition: Value,
    pub created_at: PgTimestamp,
    pub created_by: Option<String>,
}

impl From<PatternRow> for Pattern {
    fn from(r: PatternRow) -> Self {
        Pattern {
            id: r.id.hyphenated().to_string().into(),
            name: r.name.into(),
            version: r.version.into(),
            description: ropt(r.description),
            definition: r.definition.to_string().into(),
            created_at: from_pg(r.created_at),
            created_by: ropt(r.created_by),
        }
    }
}

impl PatternRow {
    pub fn from_pattern(p: &Pattern) -> Result<Self> {
        Ok(PatternRow {
            id: uuid(&p.id)?,
            name: p.name.to_string(),
            version: p.version.to_string(),
            description: opt(&p.description),
            definition: json(&p.definition)?,
            created_at: to_pg(p.created_at),
            created_by: opt(&p.created_by),
        })
    }
}

#[derive(Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = executions, check_for_backend(diesel::pg::Pg))]
pub struct ExecutionRow {
    pub id: Uuid,
    pub pattern_name: String,
    pub pattern_version: String,
    pub status: String,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub started_at: PgTimestamp,
    pub completed_at: Option<PgTimestamp>,
    pub duration_ms: Option<i64>,
    pub metadata: Option<Value>,
    pub tags: Value,
}

pub fn status_of(s: &str) -> Result<ExecutionStatus> {
    ExecutionStatus::parse(s)
        .ok_or_else(|| Error::internal(format!("unknown execution status {s:?} in the database")))
}

impl TryFrom<ExecutionRow> for Execution {
    type Error = Error;
    fn try_from(r: ExecutionRow) -> Result<Self> {
        let tags: Vec<String> = serde_json::from_value(r.tags).map_err(|e| {
            Error::internal(format!("execution {}: tags are not a JSON array of strings: {e}", r.id))
        })?;
        Ok(Execution {
            status: status_of(&r.status)?,
            id: r.id.hyphenated().to_string().into(),
            pattern_name: r.pattern_name.into(),
            pattern_version: r.pattern_version.into(),
            input: ropt_json(r.input),
            output: ropt_json(r.output),
            error: ropt_json(r.error),
            started_at: from_pg(r.started_at),
            completed_at: r.completed_at.map(from_pg).into(),
            duration_ms: r.duration_ms.into(),
            metadata: ropt_json(r.metadata),
            tags: tags.into_iter().map(RString::from).collect::<RVec<_>>(),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = execution_events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: Uuid,
    pub execution_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub payload: Value,
    pub recorded_at: PgTimestamp,
    /// Its execution's `started_at`: the partition key (events are partitioned by month with their execution).
    pub execution_started_at: PgTimestamp,
}

impl TryFrom<EventRow> for ExecutionEvent {
    type Error = Error;
    fn try_from(r: EventRow) -> Result<Self> {
        Ok(ExecutionEvent {
            kind: EventKind::parse(&r.kind)
                .ok_or_else(|| Error::internal(format!("unknown event kind {:?} in the database", r.kind)))?,
            id: r.id.hyphenated().to_string().into(),
            execution_id: r.execution_id.hyphenated().to_string().into(),
            seq: r.seq,
            payload: r.payload.to_string().into(),
            recorded_at: from_pg(r.recorded_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub id: Uuid,
    pub timestamp: PgTimestamp,
    pub action: String,
    pub actor: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub details: Option<Value>,
    pub ip_address: Option<IpNetwork>,
    pub user_agent: Option<String>,
}

impl AuditRow {
    /// `a` has been validated: its id and timestamp are set, its ip parses. `details` stays `None` (callers
    /// that write by COPY send the validated text as it is).
    pub fn from_new(a: &NewAuditEntry) -> Result<Self> {
        let ip = match a.ip_address.as_ref().into_option() {
            Some(text) => Some(parse_ip(text)?),
            None => None,
        };
        Ok(AuditRow {
            id: uuid(a.id.as_ref().into_option().map(|s| s.as_str()).unwrap_or_default())?,
            timestamp: to_pg(a.timestamp.unwrap_or_default()),
            action: a.action.to_string(),
            actor: opt(&a.actor),
            resource_type: opt(&a.resource_type),
            resource_id: opt(&a.resource_id),
            details: None,
            ip_address: ip,
            user_agent: opt(&a.user_agent),
        })
    }
}

fn parse_ip(text: &str) -> Result<IpNetwork> {
    match text.parse::<IpNetwork>() {
        Ok(n) => Ok(n),
        Err(_) => text
            .parse::<std::net::IpAddr>()
            .map(IpNetwork::from)
            .map_err(|_| Error::invalid(format!("ip_address {text:?} is not an IP address"))),
    }
}

/// INET text as written: a host address without its /32 or /128.
pub(super) fn ip_text(n: IpNetwork) -> String {
    if n.prefix() == if n.is_ipv4() { 32 } else { 128 } {
        n.ip().to_string()
    } else {
        n.to_string()
    }
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            id: r.id.hyphenated().to_string().into(),
            timestamp: from_pg(r.timestamp),
            action: r.action.into(),
            actor: ropt(r.actor),
            resource_type: ropt(r.resource_type),
            resource_id: ropt(r.resource_id),
            details: ropt_json(r.details),
            ip_address: ropt(r.ip_address.map(ip_text)),
            user_agent: ropt(r.user_agent),
        }
    }
}

/// Full-text search hits: the row and its `ts_rank`.
#[derive(QueryableByName)]
pub struct ExecutionHitRow {
    #[diesel(embed)]
    pub record: ExecutionRow,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub rank: f64,
}

#[derive(QueryableByName)]
pub struct PatternHitRow {
    #[diesel(embed)]
    pub record: PatternRow,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub rank: f64,
}
