//! The archive's format, the one thing every reader must agree on: the record schema (one JSON object per
//! line), object naming, and the manifest written last.
//!
//! - **Records** (schema version [`RECORD_SCHEMA_VERSION`]): an execution with its events embedded
//!   (`{"recordSchema":1,"id","patternName","patternVersion","status","input","output","error","startedAt",
//!   "completedAt","durationMs","metadata","tags":[…],"events":[{"id","seq","kind","payload","recordedAt"}]}`)
//!   or an audit entry (`{"recordSchema":1,"id","timestamp","action","actor","resourceType","resourceId",
//!   "details","ipAddress","userAgent"}`) or a pattern version (`{"recordSchema":1,"id","name","version",
//!   "description","definition","createdAt","createdBy"}`, written by `export`). Every field is written, absent values as `null`. Times are RFC 3339
//!   UTC with six fractional digits, so they round-trip to the microsecond. JSON documents (input, output,
//!   error, metadata, event payload, audit details) are embedded as JSON values exactly as stored (key order
//!   and number spelling kept), not as strings; a line break between tokens is written as a space so a record
//!   stays on one line. A document that is JSON `null` is written as `null`, and reads back as absent (a
//!   pattern's definition is always present).
//! - **Objects**: gzip (one member) of newline-delimited records, keys relative to the archive's root:
//!   `executions/YYYY/MM/<run-id>-NNNN.ndjson.gz` (month of `startedAt` / `timestamp` / `createdAt`, `NNNN`
//!   counting from 0001 across the run; tables `executions`, `audit_logs` and, in an export, `patterns`).
//! - **Manifest** ([`Manifest`], version [`FORMAT_VERSION`]): `<table>/manifests/<run-id>.json`, written after
//!   every object is stored and verified; it lists each object's size and SHA-256.
//!
//! Reading is strict: a line that is not a record of a known schema is an error naming the object and line.
//! Fields added later keep the schema version (readers ignore fields they do not know).

use parallax_storage_abi::{
    archive::ObjectEntry, retention::CleanupTarget, AuditEntry, EventKind, Execution, ExecutionEvent,
    ExecutionStatus, Pattern,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ExecutionRecord;
use crate::{
    error::{Error, Result},
    time,
};

/// The version of the record schema (the JSON of one line). Bumped when a field changes meaning or goes away;
/// added fields keep it.
pub const RECORD_SCHEMA_VERSION: u32 = 1;

/// The version of the manifest and object layout.
pub const FORMAT_VERSION: u32 = 1;

/// The gzip level of archive objects: 1 (fastest). Compression is most of an archive run's CPU time; on
/// newline-delimited JSON level 1 already shrinks the data several times, and higher levels cost 3-5 times
/// the CPU for 10-25 % smaller objects. Anyone may recompress; the manifest's checksum is of the stored bytes.
pub const GZIP_LEVEL: u32 = 1;

/// The tables an archive holds, with their directory names, in the order an export writes and an import
/// reads them (`patterns` only in an export: archive runs never select patterns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Patterns,
    Executions,
    AuditLogs,
}

impl Table {
    pub fn of(target: CleanupTarget) -> Table {
        match target {
            CleanupTarget::Executions => Table::Executions,
            CleanupTarget::AuditLogs => Table::AuditLogs,
        }
    }

    /// The directory and table name: `patterns`, `executions` or `audit_logs`.
    pub fn dir(self) -> &'static str {
        match self {
            Table::Patterns => "patterns",
            Table::Executions => "executions",
            Table::AuditLogs => "audit_logs",
        }
    }

    /// Every table, in order.
    pub const ALL: [Table; 3] = [Table::Patterns, Table::Executions, Table::AuditLogs];

    pub fn parse(dir: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.dir() == dir)
    }
}

/// `executions/2024/01/<run-id>-0001.ndjson.gz`: the object of `run_id` numbered `n` holding records of the
/// month of `at` (UTC).
pub fn object_key(table: Table, at: i64, run_id: &str, n: u32) -> String {
    let (y, m) = month(at);
    format!("{}/{y:04}/{m:02}/{run_id}-{n:04}.ndjson.gz", table.dir())
}

/// `executions/manifests/<run-id>.json`.
pub fn manifest_key(table: Table, run_id: &str) -> String {
    format!("{}/manifests/{run_id}.json", table.dir())
}

/// Whether `key` (relative to a root) is an object of run `run_id` in `table`.
pub fn is_object_of(key: &str, table: Table, run_id: &str) -> bool {
    key.strip_prefix(table.dir()).is_some_and(|rest| rest.starts_with('/'))
        && key.ends_with(".ndjson.gz")
        && key.rsplit('/').next().is_some_and(|name| name.starts_with(&format!("{run_id}-")))
}

/// The UTC year and month of an instant.
pub fn month(at: i64) -> (i16, i8) {
    let d = time::utc(at);
    (d.year(), d.month())
}

/// A record of any table.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Execution(ExecutionRecord),
    /// An audit entry, with its place in the audit chain when it was archived from a chained store.
    Audit(AuditEntry, Option<ChainLink>),
    Pattern(Pattern),
}

/// An archived audit entry's chain columns (hashes as 64 hex digits): with the manifest's
/// [`ManifestChain`], an archived segment verifies on its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChainLink {
    pub seq: i64,
    pub prev: String,
    pub hash: String,
}

/// Where an archived audit segment sits in the chain: it holds the entries after `afterSeq` (whose hash is
/// `prevHash`, the checkpoint before the run) up to `lastSeq` (hash `lastHash`, the checkpoint after it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestChain {
    pub after_seq: i64,
    pub prev_hash: String,
    pub last_seq: i64,
    pub last_hash: String,
}

impl Record {
    pub fn id(&self) -> &str {
        match self {
            Record::Execution(r) => r.execution.id.as_str(),
            Record::Audit(a, _) => a.id.as_str(),
            Record::Pattern(p) => p.id.as_str(),
        }
    }

    /// `startedAt`, `timestamp` or `createdAt`.
    pub fn at(&self) -> i64 {
        match self {
            Record::Execution(r) => r.execution.started_at,
            Record::Audit(a, _) => a.timestamp,
            Record::Pattern(p) => p.created_at,
        }
    }

    pub fn events(&self) -> u64 {
        match self {
            Record::Execution(r) => r.events.len() as u64,
            Record::Audit(..) | Record::Pattern(_) => 0,
        }
    }

    /// The table it belongs to.
    pub fn table(&self) -> Table {
        match self {
            Record::Execution(_) => Table::Executions,
            Record::Audit(..) => Table::AuditLogs,
            Record::Pattern(_) => Table::Patterns,
        }
    }

    /// About how many bytes of documents and text it holds (for batches bounded by size).
    pub fn weight(&self) -> usize {
        let o = |v: &abi_stable::std_types::ROption<abi_stable::std_types::RString>| {
            v.as_ref().map_or(0, |s| s.len())
        };
        match self {
            Record::Execution(r) => {
                let e = &r.execution;
                256 + o(&e.input)
                    + o(&e.output)
                    + o(&e.error)
                    + o(&e.metadata)
                    + e.tags.iter().map(|t| t.len()).sum::<usize>()
                    + r.events.iter().map(|v| 128 + v.payload.len()).sum::<usize>()
            }
            Record::Audit(a, _) => 256 + o(&a.details) + o(&a.user_agent) + o(&a.actor),
            Record::Pattern(p) => 256 + p.definition.len() + o(&p.description),
        }
    }

    /// One line, without its newline.
    pub fn encode(&self) -> Result<String> {
        match self {
            Record::Execution(r) => encode_execution(r),
            Record::Audit(a, link) => encode_audit(a, link.as_ref()),
            Record::Pattern(p) => encode_pattern(p),
        }
    }
}

// ------------------------------------------------------------------ writing

/// A stored JSON document as an embedded JSON value, exactly as stored except that a line break between
/// tokens becomes a space (inside a JSON string a line break is always escaped, so this changes no value).
fn doc(what: &str, id: &str, text: &str) -> Result<Box<RawValue>> {
    let text = if text.contains(['\n', '\r']) { text.replace(['\n', '\r'], " ") } else { text.to_string() };
    RawValue::from_string(text).map_err(|e| {
        Error::internal(format!(
            "cannot archive {id}: its {what} is not valid JSON ({e}); fix or remove the row"
        ))
    })
}

fn opt_doc(what: &str, id: &str, text: Option<&str>) -> Result<Option<Box<RawValue>>> {
    text.map(|t| doc(what, id, t)).transpose()
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionLine {
    record_schema: u32,
    id: String,
    pattern_name: String,
    pattern_version: String,
    status: String,
    input: Option<Box<RawValue>>,
    output: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
    started_at: String,
    completed_at: Option<String>,
    duration_ms: Option<i64>,
    metadata: Option<Box<RawValue>>,
    tags: Vec<String>,
    events: Vec<EventLine>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventLine {
    id: String,
    seq: i64,
    kind: String,
    payload: Box<RawValue>,
    recorded_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditLine {
    record_schema: u32,
    id: String,
    timestamp: String,
    action: String,
    actor: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    details: Option<Box<RawValue>>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    /// The entry's chain columns (archives written from a chained store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<ChainLink>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatternLine {
    record_schema: u32,
    id: String,
    name: String,
    version: String,
    description: Option<String>,
    definition: Box<RawValue>,
    created_at: String,
    created_by: Option<String>,
}

fn known<'a>(what: &str, id: &str, name: &'a str, is_known: bool) -> Result<&'a str> {
    if !is_known {
        return Err(Error::internal(format!("cannot archive {id}: its {what} is not one this plugin knows")));
    }
    Ok(name)
}

/// An execution with its events as one line (no newline).
pub fn encode_execution(r: &ExecutionRecord) -> Result<String> {
    let e = &r.execution;
    let id = e.id.as_str();
    let mut events = Vec::with_capacity(r.events.len());
    for v in &r.events {
        events.push(EventLine {
            id: v.id.to_string(),
            seq: v.seq,
            kind: known("event kind", id, v.kind.as_str(), v.kind.is_known())?.to_string(),
            payload: doc("event payload", id, v.payload.as_str())?,
            recorded_at: time::rfc3339(v.recorded_at),
        });
    }
    let line = ExecutionLine {
        record_schema: RECORD_SCHEMA_VERSION,
        id: id.to_string(),
        pattern_name: e.pattern_name.to_string(),
        pattern_version: e.pattern_version.to_string(),
        status: known("status", id, e.status.as_str(), e.status.is_known())?.to_string(),
        input: opt_doc("input", id, e.input.as_ref().map(|s| s.as_str()).into())?,
        output: opt_doc("output", id, e.output.as_ref().map(|s| s.as_str()).into())?,
        error: opt_doc("error", id, e.error.as_ref().map(|s| s.as_str()).into())?,
        started_at: time::rfc3339(e.started_at),
        completed_at: Option::from(e.completed_at).map(time::rfc3339),
        duration_ms: e.duration_ms.into(),
        metadata: opt_doc("metadata", id, e.metadata.as_ref().map(|s| s.as_str()).into())?,
        tags: e.tags.iter().map(|t| t.to_string()).collect(),
        events,
    };
    Ok(serde_json::to_string(&line).expect("a record serializes"))
}

/// An audit entry as one line (no newline).
pub fn encode_audit(a: &AuditEntry, chain: Option<&ChainLink>) -> Result<String> {
    let id = a.id.as_str();
    let s = |v: &abi_stable::std_types::ROption<abi_stable::std_types::RString>| {
        v.as_ref().map(|s| s.to_string()).into_option()
    };
    let line = AuditLine {
        record_schema: RECORD_SCHEMA_VERSION,
        id: id.to_string(),
        timestamp: time::rfc3339(a.timestamp),
        action: a.action.to_string(),
        actor: s(&a.actor),
        resource_type: s(&a.resource_type),
        resource_id: s(&a.resource_id),
        details: opt_doc("details", id, a.details.as_ref().map(|s| s.as_str()).into())?,
        ip_address: s(&a.ip_address),
        user_agent: s(&a.user_agent),
        chain: chain.cloned(),
    };
    Ok(serde_json::to_string(&line).expect("a record serializes"))
}

/// A pattern version as one line (no newline).
pub fn encode_pattern(p: &Pattern) -> Result<String> {
    let id = p.id.as_str();
    let line = PatternLine {
        record_schema: RECORD_SCHEMA_VERSION,
        id: id.to_string(),
        name: p.name.to_string(),
        version: p.version.to_string(),
        description: p.description.as_ref().map(|s| s.to_string()).into_option(),
        definition: doc("definition", id, p.definition.as_str())?,
        created_at: time::rfc3339(p.created_at),
        created_by: p.created_by.as_ref().map(|s| s.to_string()).into_option(),
    };
    Ok(serde_json::to_string(&line).expect("a record serializes"))
}

// ------------------------------------------------------------------ reading

/// Where a line came from, for messages.
#[derive(Clone, Copy, Debug)]
pub struct LineAt<'a> {
    pub object: &'a str,
    pub line: u64,
}

impl LineAt<'_> {
    fn bad(&self, why: impl std::fmt::Display) -> Error {
        Error::invalid(format!(
            "object {} line {}: not a valid archive record: {why}",
            self.object, self.line
        ))
    }
}

fn check_schema(at: LineAt<'_>, v: u32) -> Result<()> {
    if v == 0 || v > RECORD_SCHEMA_VERSION {
        return Err(at.bad(format!(
            "recordSchema {v} (this plugin reads 1 to {RECORD_SCHEMA_VERSION}; a newer plugin wrote it)"
        )));
    }
    Ok(())
}

fn instant(at: LineAt<'_>, field: &str, text: &str) -> Result<i64> {
    time::parse_rfc3339(text).ok_or_else(|| {
        at.bad(format!("{field} {text:?} is not an RFC 3339 UTC time (2024-01-15T10:30:00.000000Z)"))
    })
}

fn uuid(at: LineAt<'_>, field: &str, text: &str) -> Result<String> {
    uuid::Uuid::parse_str(text)
        .map(|u| u.to_string())
        .map_err(|_| at.bad(format!("{field} {text:?} is not a UUID")))
}

fn text(v: Option<Box<RawValue>>) -> abi_stable::std_types::ROption<abi_stable::std_types::RString> {
    v.map(|r| r.get().into()).into()
}

/// Reads one line of an `executions` object.
pub fn decode_execution(line: &str, at: LineAt<'_>) -> Result<ExecutionRecord> {
    let l: ExecutionLine = serde_json::from_str(line).map_err(|e| at.bad(e))?;
    check_schema(at, l.record_schema)?;
    let id = uuid(at, "id", &l.id)?;
    let status = ExecutionStatus::parse(&l.status)
        .ok_or_else(|| at.bad(format!("status {:?} is not a known status", l.status)))?;
    let mut events = Vec::with_capacity(l.events.len());
    for v in l.events {
        events.push(ExecutionEvent {
            id: uuid(at, "event id", &v.id)?.into(),
            execution_id: id.clone().into(),
            seq: v.seq,
            kind: EventKind::parse(&v.kind)
                .ok_or_else(|| at.bad(format!("event kind {:?} is not a known kind", v.kind)))?,
            payload: v.payload.get().into(),
            recorded_at: instant(at, "recordedAt", &v.recorded_at)?,
        });
    }
    let execution = Execution {
        id: id.into(),
        pattern_name: l.pattern_name.into(),
        pattern_version: l.pattern_version.into(),
        status,
        input: text(l.input),
        output: text(l.output),
        error: text(l.error),
        started_at: instant(at, "startedAt", &l.started_at)?,
        completed_at: l.completed_at.map(|c| instant(at, "completedAt", &c)).transpose()?.into(),
        duration_ms: l.duration_ms.into(),
        metadata: text(l.metadata),
        tags: l.tags.into_iter().map(Into::into).collect(),
    };
    Ok(ExecutionRecord { execution, events })
}

/// Reads one line of an `audit_logs` object.
pub fn decode_audit(line: &str, at: LineAt<'_>) -> Result<(AuditEntry, Option<ChainLink>)> {
    let l: AuditLine = serde_json::from_str(line).map_err(|e| at.bad(e))?;
    check_schema(at, l.record_schema)?;
    let s = |v: Option<String>| v.map(Into::into).into();
    let entry = AuditEntry {
        id: uuid(at, "id", &l.id)?.into(),
        timestamp: instant(at, "timestamp", &l.timestamp)?,
        action: l.action.into(),
        actor: s(l.actor),
        resource_type: s(l.resource_type),
        resource_id: s(l.resource_id),
        details: text(l.details),
        ip_address: s(l.ip_address),
        user_agent: s(l.user_agent),
    };
    Ok((entry, l.chain))
}

/// Reads one line of a `patterns` object. The definition must be a JSON value (`null` is refused: a pattern
/// always has one).
pub fn decode_pattern(line: &str, at: LineAt<'_>) -> Result<Pattern> {
    let l: PatternLine = serde_json::from_str(line).map_err(|e| at.bad(e))?;
    check_schema(at, l.record_schema)?;
    if l.name.is_empty() || l.version.is_empty() {
        return Err(at.bad("name and version must not be empty"));
    }
    if l.definition.get() == "null" {
        return Err(at.bad("definition is null (a pattern version always has a definition)"));
    }
    Ok(Pattern {
        id: uuid(at, "id", &l.id)?.into(),
        name: l.name.into(),
        version: l.version.into(),
        description: l.description.map(Into::into).into(),
        definition: l.definition.get().into(),
        created_at: instant(at, "createdAt", &l.created_at)?,
        created_by: l.created_by.map(Into::into).into(),
    })
}

/// Reads one line of an object of `table`.
pub fn decode(table: Table, line: &str, at: LineAt<'_>) -> Result<Record> {
    match table {
        Table::Patterns => decode_pattern(line, at).map(Record::Pattern),
        Table::Executions => decode_execution(line, at).map(Record::Execution),
        Table::AuditLogs => decode_audit(line, at).map(|(a, link)| Record::Audit(a, link)),
    }
}

// ------------------------------------------------------------------ the manifest

/// The selection's limit: rows with `(time, id)` below this key were selected.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LimitKey {
    pub at: String,
    pub id: String,
}

/// The oldest and newest `startedAt` / `timestamp` of a run's records.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TimeRange {
    pub oldest: String,
    pub newest: String,
}

/// What a run stored, written last (`<table>/manifests/<run-id>.json`); object keys are relative to the
/// archive's root (the directory two levels above the manifest's), so a copied archive still verifies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub record_schema_version: u32,
    /// The plugin that wrote it.
    pub plugin_version: String,
    /// `patterns`, `executions` or `audit_logs`.
    pub table: String,
    pub run_id: String,
    pub created_at: String,
    /// Rows older than this were selected (`--older-than`), if given.
    pub cutoff: Option<String>,
    /// `--max-count`, if given.
    pub max_count: Option<u64>,
    /// The selection's limit key (both limits folded).
    pub limit: Option<LimitKey>,
    pub time_range: Option<TimeRange>,
    /// Records (lines) in all objects.
    pub rows: u64,
    /// Events embedded in them (0 for audit entries).
    pub events: u64,
    pub min_id: Option<String>,
    pub max_id: Option<String>,
    /// Every object, in the order written.
    pub objects: Vec<ObjectEntry>,
    /// An audit segment's place in the audit chain (archives of a chained store's audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ManifestChain>,
}

impl Manifest {
    pub fn table(&self) -> Option<Table> {
        Table::parse(&self.table)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest serializes") + "\n"
    }

    /// Reads a manifest, refusing one of a newer format or one whose counts do not add up.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Manifest> {
        let bad = |why: String| Error::invalid(format!("manifest {key} is not valid: {why}"));
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format_version == 0 || m.format_version > FORMAT_VERSION {
            return Err(bad(format!(
                "formatVersion {} (this plugin reads 1 to {FORMAT_VERSION}; a newer plugin wrote it)",
                m.format_version
            )));
        }
        if m.record_schema_version == 0 || m.record_schema_version > RECORD_SCHEMA_VERSION {
            return Err(bad(format!(
                "recordSchemaVersion {} is newer than this plugin",
                m.record_schema_version
            )));
        }
        if m.table().is_none() {
            return Err(bad(format!("table {:?} (expected patterns, executions or audit_logs)", m.table)));
        }
        let (rows, events) = m.objects.iter().fold((0, 0), |(r, e), o| (r + o.rows, e + o.events));
        if rows != m.rows || events != m.events {
            return Err(bad(format!(
                "it promises {} rows and {} events, its objects list {rows} and {events}",
                m.rows, m.events
            )));
        }
        for o in &m.objects {
            if o.key.starts_with('/') || o.key.split('/').any(|p| p == ".." || p.is_empty()) {
                return Err(bad(format!("object key {:?} is not a plain relative key", o.key)));
            }
        }
        Ok(m)
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{ROption, RString, RVec};

    use super::*;

    const T: i64 = 1_705_314_615_123_456; // 2024-01-15T10:30:15.123456Z

    pub(crate) fn record(n: u32) -> ExecutionRecord {
        let id = format!("0190b3f2-7c1e-7a00-8000-{n:012x}");
        ExecutionRecord {
            execution: Execution {
                id: id.clone().into(),
                pattern_name: "naïve — pattern ✓".into(),
                pattern_version: "1.2.3".into(),
                status: ExecutionStatus::Failed,
                input: ROption::RSome(
                    r#"{"z":1,"a":[1,2.50,1e300],"big":123456789012345678901234567890}"#.into(),
                ),
                output: ROption::RNone,
                error: ROption::RSome("{\n  \"message\": \"line\\nbreak 日本\"\n}".into()),
                started_at: T,
                completed_at: ROption::RSome(T + 1_500_000),
                duration_ms: ROption::RSome(1500),
                metadata: ROption::RSome("{\"k\":[null,\"v\"]}".into()),
                tags: RVec::from(vec![RString::from("a"), RString::from("b c")]),
            },
            events: (1..=3)
                .map(|s| ExecutionEvent {
                    id: format!("0190b3f2-7c1e-7a00-9000-{s:012x}").into(),
                    execution_id: id.clone().into(),
                    seq: s,
                    kind: if s == 1 { EventKind::AgentAssignment } else { EventKind::StepResult },
                    payload: format!("{{\"step\":{s},\"text\":\"{}\"}}", "x".repeat(100_000)).into(),
                    recorded_at: T + s,
                })
                .collect(),
        }
    }

    fn audit() -> AuditEntry {
        AuditEntry {
            id: "0190b3f2-7c1e-7a00-8000-0000000001ff".into(),
            timestamp: 0,
            action: "pattern.create".into(),
            actor: ROption::RSome("ünïcode 👍".into()),
            resource_type: ROption::RNone,
            resource_id: ROption::RSome("p-1".into()),
            details: ROption::RSome("[1, {\"b\": true}]".into()),
            ip_address: ROption::RSome("::1".into()),
            user_agent: ROption::RNone,
        }
    }

    fn at() -> LineAt<'static> {
        LineAt { object: "executions/2024/01/r-0001.ndjson.gz", line: 7 }
    }

    #[test]
    fn execution_records_round_trip() {
        let r = record(1);
        let line = encode_execution(&r).unwrap();
        assert!(!line.contains('\n'), "one line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["recordSchema"], 1);
        assert_eq!(v["startedAt"], "2024-01-15T10:30:15.123456Z");
        assert_eq!(v["output"], serde_json::Value::Null);
        assert!(v["input"].is_object(), "documents are JSON values, not strings: {v}");
        assert_eq!(v["events"][1]["kind"], "step_result");
        let back = decode_execution(&line, at()).unwrap();
        // Documents keep their text, except line breaks between tokens.
        assert_eq!(back.execution.input, r.execution.input);
        assert_eq!(
            back.execution.error.as_ref().unwrap().as_str(),
            "{   \"message\": \"line\\nbreak 日本\" }"
        );
        let mut want = r.clone();
        want.execution.error = back.execution.error.clone();
        assert!(back == want, "the record reads back as written");
        let json =
            |s: &ROption<RString>| serde_json::from_str::<serde_json::Value>(s.as_ref().unwrap()).unwrap();
        assert_eq!(json(&back.execution.error), json(&r.execution.error));

        // All optional fields absent.
        let mut bare = record(2);
        bare.events.clear();
        bare.execution.status = ExecutionStatus::Completed;
        bare.execution.input = ROption::RNone;
        bare.execution.error = ROption::RNone;
        bare.execution.metadata = ROption::RNone;
        bare.execution.completed_at = ROption::RNone;
        bare.execution.duration_ms = ROption::RNone;
        bare.execution.tags = RVec::new();
        assert_eq!(decode_execution(&encode_execution(&bare).unwrap(), at()).unwrap(), bare);
    }

    #[test]
    fn audit_records_round_trip() {
        let a = audit();
        let line = encode_audit(&a, None).unwrap();
        assert!(
            line.contains("\"timestamp\":\"1970-01-01T00:00:00.000000Z\"")
                && line.contains("\"userAgent\":null")
        );
        assert_eq!(decode_audit(&line, at()).unwrap(), (a.clone(), None));
        let rec = decode(Table::AuditLogs, &line, at()).unwrap();
        assert_eq!((rec.id(), rec.at(), rec.events()), (a.id.as_str(), 0, 0));
    }

    #[test]
    fn bad_lines_are_refused_naming_object_and_line() {
        let good = encode_execution(&record(1)).unwrap();
        let cases = [
            ("", "EOF"),
            ("{not json", "key must be a string"),
            ("[1,2]", "invalid type"),
            (&good.replace("\"recordSchema\":1", "\"recordSchema\":2"), "recordSchema 2"),
            (&good.replace("\"status\":\"failed\"", "\"status\":\"exploded\""), "\"exploded\""),
            (&good.replace("2024-01-15T10:30:15.123456Z", "yesterday"), "startedAt \"yesterday\""),
            (&good.replace("0190b3f2-7c1e-7a00-8000-000000000001", "nope"), "id \"nope\""),
            (&good.replace("\"agent_assignment\"", "\"magic\""), "\"magic\""),
            (&good.replace(",\"patternName\"", ",\"x\":1,\"patternNameX\""), "patternName"),
        ];
        for (line, needle) in cases {
            let e = decode_execution(line, at()).unwrap_err();
            let m = e.to_string();
            assert!(
                m.contains("object executions/2024/01/r-0001.ndjson.gz line 7") && m.contains(needle),
                "{m}"
            );
        }
        // An audit line is not an execution and the other way round.
        let audit_line = encode_audit(&audit(), None).unwrap();
        assert!(decode_execution(&audit_line, at()).is_err());
        assert!(decode_audit(&good, at()).is_err());
        // Added fields are read (a later schema 1 writer).
        let extra = good.replacen('{', "{\"addedLater\":[1],", 1);
        assert!(decode_execution(&extra, at()).unwrap() == decode_execution(&good, at()).unwrap());
    }

    fn pattern() -> Pattern {
        Pattern {
            id: "0190b3f2-7c1e-7a00-8000-0000000002aa".into(),
            name: "naïve — pattern ✓ 日本".into(),
            version: "2.0.0-rc.1".into(),
            description: ROption::RSome("säubern\nzwei Zeilen 👍".into()),
            definition: format!(
                "{{\n  \"steps\": [{}],\n  \"n\": 1e2, \"z\": 2.50, \"s\": \"a\\nb\"\n}}",
                (0..20_000)
                    .map(|i| format!("{{\"id\":{i},\"text\":\"é{i}\"}}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .into(),
            created_at: T,
            created_by: ROption::RSome("ünïcode admin".into()),
        }
    }

    #[test]
    fn pattern_records_round_trip() {
        let p = pattern();
        assert!(p.definition.len() > 500_000, "a large definition");
        let line = encode_pattern(&p).unwrap();
        assert!(!line.contains('\n'), "one line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["recordSchema"], 1);
        assert_eq!(v["createdAt"], "2024-01-15T10:30:15.123456Z");
        assert!(v["definition"].is_object(), "the definition is a JSON value, not a string");
        assert_eq!(v["definition"]["n"], serde_json::json!(100.0));
        let back = decode_pattern(&line, at()).unwrap();
        // The definition keeps its text except the line breaks between tokens; numbers keep their spelling.
        assert_eq!(back.definition.as_str(), p.definition.replace('\n', " "));
        assert!(back.definition.contains("\"z\": 2.50"));
        assert_eq!(Pattern { definition: p.definition.clone(), ..back.clone() }, p);
        let rec = decode(Table::Patterns, &line, at()).unwrap();
        assert_eq!((rec.id(), rec.at(), rec.events(), rec.table()), (p.id.as_str(), T, 0, Table::Patterns));
        assert_eq!(rec.encode().unwrap(), line, "encoding what was read gives the same line");

        // Absent description and author read back as absent; written as null.
        let bare = Pattern {
            description: ROption::RNone,
            created_by: ROption::RNone,
            definition: "{}".into(),
            ..pattern()
        };
        let line = encode_pattern(&bare).unwrap();
        assert!(line.contains("\"description\":null") && line.contains("\"createdBy\":null"), "{line}");
        assert_eq!(decode_pattern(&line, at()).unwrap(), bare);
    }

    #[test]
    fn bad_pattern_lines_are_refused_naming_object_and_line() {
        let good = encode_pattern(&Pattern { definition: "{\"a\":1}".into(), ..pattern() }).unwrap();
        let cases = [
            ("", "EOF"),
            (&good.replace("\"recordSchema\":1", "\"recordSchema\":3"), "recordSchema 3"),
            (&good.replace("\"recordSchema\":1", "\"recordSchema\":0"), "recordSchema 0"),
            (&good.replace("2024-01-15T10:30:15.123456Z", "2024-01-15"), "createdAt \"2024-01-15\""),
            (&good.replace("0190b3f2-7c1e-7a00-8000-0000000002aa", "p-1"), "id \"p-1\""),
            (&good.replace("{\"a\":1}", "null"), "definition is null"),
            (&good.replace(",\"definition\"", ",\"definitionX\""), "definition"),
            (&good.replace("\"version\":\"2.0.0-rc.1\"", "\"version\":\"\""), "must not be empty"),
            (&good.replace("\"version\":\"2.0.0-rc.1\"", "\"version\":2"), "invalid type"),
        ];
        for (line, needle) in cases {
            let e = decode_pattern(line, at()).unwrap_err();
            let m = e.to_string();
            assert!(
                m.contains("object executions/2024/01/r-0001.ndjson.gz line 7") && m.contains(needle),
                "{needle}: {m}"
            );
        }
        // Lines of other tables are not patterns, and a pattern is not an execution or audit entry.
        assert!(decode_pattern(&encode_audit(&audit(), None).unwrap(), at()).is_err());
        assert!(decode_pattern(&encode_execution(&record(1)).unwrap(), at()).is_err());
        assert!(decode_execution(&good, at()).is_err());
        assert!(decode_audit(&good, at()).is_err());
        // An invalid stored definition is refused when writing, naming the row.
        let e = encode_pattern(&Pattern { definition: "{oops".into(), ..pattern() }).unwrap_err();
        assert!(
            e.to_string().contains("0190b3f2-7c1e-7a00-8000-0000000002aa: its definition is not valid"),
            "{e}"
        );
        // Added fields are read (a later schema 1 writer).
        let extra = good.replacen('{', "{\"addedLater\":{\"x\":1},", 1);
        assert_eq!(decode_pattern(&extra, at()).unwrap(), decode_pattern(&good, at()).unwrap());
    }

    #[test]
    fn invalid_stored_json_is_refused_when_writing() {
        let mut r = record(1);
        r.execution.metadata = ROption::RSome("{oops".into());
        let e = encode_execution(&r).unwrap_err();
        assert!(e.to_string().contains("metadata is not valid JSON"), "{e}");
    }

    #[test]
    fn keys_and_months() {
        assert_eq!(object_key(Table::Executions, T, "r1", 1), "executions/2024/01/r1-0001.ndjson.gz");
        assert_eq!(object_key(Table::AuditLogs, 0, "r1", 12345), "audit_logs/1970/01/r1-12345.ndjson.gz");
        assert_eq!(manifest_key(Table::AuditLogs, "r1"), "audit_logs/manifests/r1.json");
        assert!(is_object_of("executions/2024/01/r1-0001.ndjson.gz", Table::Executions, "r1"));
        assert!(!is_object_of("executions/2024/01/r10-0001.ndjson.gz", Table::Executions, "r1"));
        assert!(!is_object_of("audit_logs/2024/01/r1-0001.ndjson.gz", Table::Executions, "r1"));
        assert!(!is_object_of("executions/manifests/r1.json", Table::Executions, "r1"));
        assert_eq!(month(T - 15 * 86_400_000_000), (2023, 12));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn table_names_and_pattern_keys() {
        assert_eq!(Table::ALL.map(Table::dir), ["patterns", "executions", "audit_logs"]);
        for t in Table::ALL {
            assert_eq!(Table::parse(t.dir()), Some(t));
        }
        assert_eq!(Table::parse("widgets"), None);
        assert_eq!(object_key(Table::Patterns, T, "r1", 2), "patterns/2024/01/r1-0002.ndjson.gz");
        assert_eq!(manifest_key(Table::Patterns, "r1"), "patterns/manifests/r1.json");
        assert!(is_object_of("patterns/2024/01/r1-0002.ndjson.gz", Table::Patterns, "r1"));
        assert!(!is_object_of("patterns/2024/01/r1-0002.ndjson.gz", Table::Executions, "r1"));
    }

    #[test]
    fn manifests_are_checked() {
        let m = Manifest {
            format_version: 1,
            record_schema_version: 1,
            plugin_version: "0.1.0".into(),
            table: "executions".into(),
            run_id: "r".into(),
            created_at: time::rfc3339(T),
            cutoff: None,
            max_count: Some(3),
            limit: Some(LimitKey { at: time::rfc3339(T), id: "x".into() }),
            time_range: None,
            rows: 2,
            events: 1,
            min_id: None,
            max_id: None,
            chain: None,
            objects: vec![ObjectEntry {
                key: "executions/2024/01/r-0001.ndjson.gz".into(),
                rows: 2,
                events: 1,
                ..Default::default()
            }],
        };
        assert_eq!(Manifest::parse("k", m.to_json().as_bytes()).unwrap(), m);
        // A patterns manifest (an export's), also without any object (an export of a store without patterns).
        let p = Manifest { table: "patterns".into(), rows: 0, events: 0, objects: vec![], ..m.clone() };
        let back = Manifest::parse("k", p.to_json().as_bytes()).unwrap();
        assert_eq!((back.table(), back.rows), (Some(Table::Patterns), 0));
        let e = Manifest::parse("k", br#"{"formatVersion":1}"#).unwrap_err();
        assert!(e.to_string().contains("manifest k is not valid"), "{e}");
        for (bad, needle) in [
            (Manifest { format_version: 2, ..m.clone() }, "formatVersion 2"),
            (Manifest { rows: 3, ..m.clone() }, "promises 3 rows"),
            (Manifest { table: "widgets".into(), ..m.clone() }, "\"widgets\""),
            (
                Manifest {
                    objects: vec![ObjectEntry {
                        key: "../x".into(),
                        rows: 2,
                        events: 1,
                        ..Default::default()
                    }],
                    ..m.clone()
                },
                "\"../x\"",
            ),
        ] {
            let e = Manifest::parse("k", bad.to_json().as_bytes()).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
