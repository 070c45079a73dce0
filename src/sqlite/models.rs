//! Row types of the SQLite schema and their conversion to the boundary types.

use abi_stable::std_types::{ROption, RString, RVec};
use diesel::prelude::*;
use parallax_storage_abi::{AuditEntry, EventKind, Execution, ExecutionEvent, ExecutionStatus, Pattern};

use super::schema::{audit_logs, execution_events, executions, patterns};
use crate::error::{Error, Result};

fn ropt(o: Option<String>) -> ROption<RString> {
    o.map(RString::from).into()
}

fn opt(o: &ROption<RString>) -> Option<String> {
    o.as_ref().map(|s| s.to_string()).into_option()
}

#[derive(Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = patterns, check_for_backend(diesel::sqlite::Sqlite))]
pub struct PatternRow {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub definition: String,
    pub created_at: i64,
    pub created_by: Option<String>,
}

impl From<PatternRow> for Pattern {
    fn from(r: PatternRow) -> Self {
        Pattern {
            id: r.id.into(),
            name: r.name.into(),
            version: r.version.into(),
            description: ropt(r.description),
            definition: r.definition.into(),
            created_at: r.created_at,
            created_by: ropt(r.created_by),
        }
    }
}

impl From<&Pattern> for PatternRow {
    fn from(p: &Pattern) -> Self {
        PatternRow {
            id: p.id.to_string(),
            name: p.name.to_string(),
            version: p.version.to_string(),
            description: opt(&p.description),
            definition: p.definition.to_string(),
            created_at: p.created_at,
            created_by: opt(&p.created_by),
        }
    }
}

#[derive(Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = executions, check_for_backend(diesel::sqlite::Sqlite))]
pub struct ExecutionRow {
    pub id: String,
    pub pattern_name: String,
    pub pattern_version: String,
    pub status: String,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub metadata: Option<String>,
    pub tags: String,
}

pub fn status_of(s: &str) -> Result<ExecutionStatus> {
    ExecutionStatus::parse(s)
        .ok_or_else(|| Error::internal(format!("unknown execution status {s:?} in the database")))
}

impl TryFrom<ExecutionRow> for Execution {
    type Error = Error;
    fn try_from(r: ExecutionRow) -> Result<Self> {
        let tags: Vec<String> = serde_json::from_str(&r.tags).map_err(|e| {
            Error::internal(format!("execution {}: tags are not a JSON array of strings: {e}", r.id))
        })?;
        Ok(Execution {
            status: status_of(&r.status)?,
            id: r.id.into(),
            pattern_name: r.pattern_name.into(),
            pattern_version: r.pattern_version.into(),
            input: ropt(r.input),
            output: ropt(r.output),
            error: ropt(r.error),
            started_at: r.started_at,
            completed_at: r.completed_at.into(),
            duration_ms: r.duration_ms.into(),
            metadata: ropt(r.metadata),
            tags: tags.into_iter().map(RString::from).collect::<RVec<_>>(),
        })
    }
}

/// The columns an update may change; `None` leaves a column alone.
#[derive(AsChangeset, Default)]
#[diesel(table_name = executions)]
pub struct ExecutionChanges {
    pub status: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub metadata: Option<String>,
    pub completed_at: Option<i64>,
    pub duration_ms: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = execution_events, check_for_backend(diesel::sqlite::Sqlite))]
pub struct EventRow {
    pub id: String,
    pub execution_id: String,
    pub seq: i64,
    pub kind: String,
    pub payload: String,
    pub recorded_at: i64,
}

impl TryFrom<EventRow> for ExecutionEvent {
    type Error = Error;
    fn try_from(r: EventRow) -> Result<Self> {
        Ok(ExecutionEvent {
            kind: EventKind::parse(&r.kind)
                .ok_or_else(|| Error::internal(format!("unknown event kind {:?} in the database", r.kind)))?,
            id: r.id.into(),
            execution_id: r.execution_id.into(),
            seq: r.seq,
            payload: r.payload.into(),
            recorded_at: r.recorded_at,
        })
    }
}

#[derive(Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::sqlite::Sqlite))]
pub struct AuditRow {
    pub id: String,
    pub timestamp: i64,
    pub action: String,
    pub actor: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub details: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            id: r.id.into(),
            timestamp: r.timestamp,
            action: r.action.into(),
            actor: ropt(r.actor),
            resource_type: ropt(r.resource_type),
            resource_id: ropt(r.resource_id),
            details: ropt(r.details),
            ip_address: ropt(r.ip_address),
            user_agent: ropt(r.user_agent),
        }
    }
}

/// An audit row as it is inserted: the entry and its place in the chain.
#[derive(Insertable)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::sqlite::Sqlite))]
pub struct ChainedAuditRow {
    #[diesel(embed)]
    pub row: AuditRow,
    pub chain_seq: i64,
    pub chain_prev: Vec<u8>,
    pub chain_hash: Vec<u8>,
}

impl ChainedAuditRow {
    pub fn new(row: AuditRow, link: &crate::audit_chain::Link) -> Self {
        ChainedAuditRow {
            row,
            chain_seq: link.seq,
            chain_prev: link.prev.to_vec(),
            chain_hash: link.hash.to_vec(),
        }
    }
}

impl From<&AuditEntry> for AuditRow {
    fn from(a: &AuditEntry) -> Self {
        AuditRow {
            id: a.id.to_string(),
            timestamp: a.timestamp,
            action: a.action.to_string(),
            actor: opt(&a.actor),
            resource_type: opt(&a.resource_type),
            resource_id: opt(&a.resource_id),
            details: opt(&a.details),
            ip_address: opt(&a.ip_address),
            user_agent: opt(&a.user_agent),
        }
    }
}

/// Full-text search hits: the row and its relevance (`-bm25`, higher is better).
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
