//! The on-disk documents and their conversion to and from the boundary types.
//!
//! JSON documents (definitions, inputs, outputs, payloads…) are stored as native YAML/JSON structures, not as
//! strings, so the files stay readable; reading one back yields the same canonical JSON text the adapter
//! validated. Timestamps are RFC 3339 UTC with microseconds, exact to the microsecond. Unknown fields are
//! refused, so a typo in a hand edit is reported rather than silently dropped.

use abi_stable::std_types::{ROption, RString, RVec};
use parallax_storage_abi::{AuditEntry, EventKind, Execution, ExecutionEvent, ExecutionStatus, Pattern};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{
    codec::Encoding,
    layout::{format_ts, parse_ts},
};

/// A present field holding `null` is `Some(Value::Null)`; an absent one is `None`.
fn some_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn doc(text: &str, what: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

fn opt_doc(text: &ROption<RString>, what: &str) -> Result<Option<Value>, String> {
    text.as_ref().map(|t| doc(t, what)).into_option().transpose()
}

fn rs(s: String) -> RString {
    RString::from(s)
}

fn ropt(s: Option<String>) -> ROption<RString> {
    s.map(RString::from).into()
}

fn opt(s: &ROption<RString>) -> Option<String> {
    s.as_ref().map(|s| s.to_string()).into_option()
}

fn json_text(v: Option<Value>) -> ROption<RString> {
    v.map(|v| RString::from(v.to_string())).into()
}

fn ts(s: &str, field: &str) -> Result<i64, String> {
    let t = parse_ts(s)
        .ok_or_else(|| format!("{field} {s:?} is not a UTC timestamp such as 2024-01-15T10:30:00.000000Z"))?;
    crate::validate::timestamp(t, field).map_err(|e| e.0.message.to_string())?;
    Ok(t)
}

fn uuid(s: &str, field: &str) -> Result<String, String> {
    crate::validate::uuid(s, field).map_err(|e| e.0.message.to_string())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDoc {
    pub store: String,
    pub format_version: u32,
    pub created_at: String,
    pub created_by: String,
}

pub const STORE_KIND: &str = "parallax-file-store";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternDoc {
    id: String,
    name: String,
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    definition: Value,
}

impl PatternDoc {
    pub fn new(p: &Pattern) -> Result<Self, String> {
        Ok(PatternDoc {
            id: p.id.to_string(),
            name: p.name.to_string(),
            version: p.version.to_string(),
            description: opt(&p.description),
            created_at: format_ts(p.created_at),
            created_by: opt(&p.created_by),
            definition: doc(&p.definition, "definition")?,
        })
    }

    pub fn into_pattern(self) -> Result<Pattern, String> {
        crate::validate::label(&self.name, "name", 255).map_err(|e| e.0.message.to_string())?;
        crate::validate::semver(&self.version).map_err(|e| e.0.message.to_string())?;
        if !self.definition.is_object() {
            return Err("definition must be a mapping (a JSON object)".into());
        }
        Ok(Pattern {
            id: rs(uuid(&self.id, "id")?),
            created_at: ts(&self.created_at, "created_at")?,
            name: rs(self.name),
            version: rs(self.version),
            description: ropt(self.description),
            definition: rs(self.definition.to_string()),
            created_by: ropt(self.created_by),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionDoc {
    id: String,
    pattern_name: String,
    pattern_version: String,
    status: String,
    started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "some_value", skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(default, deserialize_with = "some_value", skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
    #[serde(default, deserialize_with = "some_value", skip_serializing_if = "Option::is_none")]
    output: Option<Value>,
    #[serde(default, deserialize_with = "some_value", skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

impl ExecutionDoc {
    pub fn new(e: &Execution) -> Result<Self, String> {
        Ok(ExecutionDoc {
            id: e.id.to_string(),
            pattern_name: e.pattern_name.to_string(),
            pattern_version: e.pattern_version.to_string(),
            status: e.status.as_str().to_string(),
            started_at: format_ts(e.started_at),
            completed_at: e.completed_at.into_option().map(format_ts),
            duration_ms: e.duration_ms.into_option(),
            tags: e.tags.iter().map(|t| t.to_string()).collect(),
            metadata: opt_doc(&e.metadata, "metadata")?,
            input: opt_doc(&e.input, "input")?,
            output: opt_doc(&e.output, "output")?,
            error: opt_doc(&e.error, "error")?,
        })
    }

    pub fn into_execution(self) -> Result<Execution, String> {
        let status = ExecutionStatus::parse(&self.status).ok_or_else(|| {
            format!("status {:?} is not one of pending, running, completed, failed, cancelled", self.status)
        })?;
        Ok(Execution {
            id: rs(uuid(&self.id, "id")?),
            status,
            started_at: ts(&self.started_at, "started_at")?,
            completed_at: self.completed_at.map(|c| ts(&c, "completed_at")).transpose()?.into(),
            pattern_name: rs(self.pattern_name),
            pattern_version: rs(self.pattern_version),
            duration_ms: self.duration_ms.into(),
            tags: self.tags.into_iter().map(RString::from).collect::<RVec<_>>(),
            metadata: json_text(self.metadata),
            input: json_text(self.input),
            output: json_text(self.output),
            error: json_text(self.error),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDoc {
    id: String,
    execution_id: String,
    seq: i64,
    kind: String,
    recorded_at: String,
    payload: Value,
}

impl EventDoc {
    pub fn new(e: &ExecutionEvent) -> Result<Self, String> {
        Ok(EventDoc {
            id: e.id.to_string(),
            execution_id: e.execution_id.to_string(),
            seq: e.seq,
            kind: e.kind.as_str().to_string(),
            recorded_at: format_ts(e.recorded_at),
            payload: doc(&e.payload, "payload")?,
        })
    }

    pub fn into_event(self) -> Result<ExecutionEvent, String> {
        let kind = EventKind::parse(&self.kind)
            .ok_or_else(|| format!("kind {:?} is not agent_assignment or step_result", self.kind))?;
        if self.seq < 1 {
            return Err(format!("seq {} must be 1 or more", self.seq));
        }
        Ok(ExecutionEvent {
            id: rs(uuid(&self.id, "id")?),
            execution_id: rs(uuid(&self.execution_id, "execution_id")?),
            seq: self.seq,
            kind,
            payload: rs(self.payload.to_string()),
            recorded_at: ts(&self.recorded_at, "recorded_at")?,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBatchDoc {
    batch: String,
    entries: Vec<AuditDoc>,
}

/// An audit entry's chain fields as stored (format 2): the hashes as their bytes, whatever their length (a
/// damaged value is kept for `audit verify` to judge, not refused).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StoredLink {
    pub seq: i64,
    pub prev: Vec<u8>,
    pub hash: Vec<u8>,
}

impl From<crate::audit_chain::Link> for StoredLink {
    fn from(l: crate::audit_chain::Link) -> Self {
        StoredLink { seq: l.seq, prev: l.prev.to_vec(), hash: l.hash.to_vec() }
    }
}

/// An audit entry with its chain fields (`None`: the entry has none, format 1 or written around the plugin).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAudit {
    pub entry: AuditEntry,
    pub link: Option<StoredLink>,
}

impl StoredAudit {
    pub fn unchained(entry: AuditEntry) -> Self {
        StoredAudit { entry, link: None }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditDoc {
    id: String,
    timestamp: String,
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource_id: Option<String>,
    #[serde(default, deserialize_with = "some_value", skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    // The chain fields (format 2). Read as any value: a hand-edited or damaged one still loads, so that
    // `audit verify` can name the entry instead of the whole batch being skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain_seq: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain_prev: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain_hash: Option<Value>,
}

/// A stored hash field as bytes: hex digits decoded (any even length), anything else as its text's bytes (it
/// then matches no hash).
fn hash_bytes(v: Option<Value>) -> Vec<u8> {
    let text = match v {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    let hex = text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex {
        return text.into_bytes();
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or(0)).collect()
}

/// The chain fields of a stored entry: `None` when it has no usable sequence number (absent, or not an
/// integer: then the entry counts as unchained).
fn link_of(seq: Option<Value>, prev: Option<Value>, hash: Option<Value>) -> Option<StoredLink> {
    let seq = match seq? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(StoredLink { seq, prev: hash_bytes(prev), hash: hash_bytes(hash) })
}

impl AuditBatchDoc {
    pub fn new(batch: &str, entries: &[StoredAudit]) -> Result<Self, String> {
        let entries = entries
            .iter()
            .map(|StoredAudit { entry: a, link }| {
                Ok(AuditDoc {
                    id: a.id.to_string(),
                    timestamp: format_ts(a.timestamp),
                    action: a.action.to_string(),
                    actor: opt(&a.actor),
                    resource_type: opt(&a.resource_type),
                    resource_id: opt(&a.resource_id),
                    details: opt_doc(&a.details, "details")?,
                    ip_address: opt(&a.ip_address),
                    user_agent: opt(&a.user_agent),
                    chain_seq: link.as_ref().map(|l| Value::from(l.seq)),
                    chain_prev: link.as_ref().map(|l| Value::from(crate::audit_chain::hex(&l.prev))),
                    chain_hash: link.as_ref().map(|l| Value::from(crate::audit_chain::hex(&l.hash))),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(AuditBatchDoc { batch: batch.to_string(), entries })
    }

    pub fn into_entries(self) -> Result<Vec<StoredAudit>, String> {
        self.entries
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let at = |e: String| format!("entry {i}: {e}");
                let entry = AuditEntry {
                    id: rs(uuid(&a.id, "id").map_err(at)?),
                    timestamp: ts(&a.timestamp, "timestamp").map_err(at)?,
                    action: rs(a.action),
                    actor: ropt(a.actor),
                    resource_type: ropt(a.resource_type),
                    resource_id: ropt(a.resource_id),
                    details: json_text(a.details),
                    ip_address: ropt(a.ip_address),
                    user_agent: ropt(a.user_agent),
                };
                Ok(StoredAudit { entry, link: link_of(a.chain_seq, a.chain_prev, a.chain_hash) })
            })
            .collect()
    }
}

/// The audit chain's head record (format 2), `audit-chain.json` at the top of the store: the newest entry's
/// position, and the checkpoint of the oldest entries removed by cleanup or archive.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainDoc {
    head_seq: i64,
    head_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<CheckpointDoc>,
    /// When format 2 was applied (the store created or migrated).
    since: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointDoc {
    seq: i64,
    hash: String,
    removed: u64,
    at: String,
}

impl ChainDoc {
    pub fn new(state: &crate::audit_chain::ChainState, since: i64) -> Self {
        use crate::audit_chain::hex;
        ChainDoc {
            head_seq: state.head.seq,
            head_hash: hex(&state.head.hash),
            checkpoint: state.checkpoint.map(|c| CheckpointDoc {
                seq: c.seq,
                hash: hex(&c.hash),
                removed: c.removed,
                at: format_ts(c.at),
            }),
            since: format_ts(since),
        }
    }

    /// The head record, and when format 2 was applied.
    pub fn into_state(self) -> Result<(crate::audit_chain::ChainState, i64), String> {
        use crate::audit_chain::{parse_hex, ChainState, Checkpoint, Head};
        let hash =
            |s: &str, what: &str| parse_hex(s).ok_or_else(|| format!("{what} {s:?} is not 64 hex digits"));
        let head = Head { seq: self.head_seq, hash: hash(&self.head_hash, "head_hash")? };
        let checkpoint = match self.checkpoint {
            None => None,
            Some(c) => Some(Checkpoint {
                seq: c.seq,
                hash: hash(&c.hash, "checkpoint hash")?,
                removed: c.removed,
                at: parse_ts(&c.at)
                    .ok_or_else(|| format!("checkpoint at {:?} is not a UTC timestamp", c.at))?,
            }),
        };
        let since =
            parse_ts(&self.since).ok_or_else(|| format!("since {:?} is not a UTC timestamp", self.since))?;
        Ok((ChainState { head, checkpoint, legacy_pending: false }, since))
    }
}

/// A record to be written, encoded by the writer's I/O threads.
pub enum Doc {
    Pattern(Pattern),
    Execution(Execution),
    Event(ExecutionEvent),
    Audit {
        batch: String,
        entries: Vec<StoredAudit>,
    },
    /// The audit chain's head record (always JSON, never compressed).
    Chain(ChainDoc),
}

impl Doc {
    pub fn encode(&self, enc: Encoding) -> Result<Vec<u8>, String> {
        match self {
            Doc::Pattern(p) => enc.encode(&PatternDoc::new(p)?),
            Doc::Execution(e) => enc.encode(&ExecutionDoc::new(e)?),
            Doc::Event(e) => enc.encode(&EventDoc::new(e)?),
            Doc::Audit { batch, entries } => enc.encode(&AuditBatchDoc::new(batch, entries)?),
            Doc::Chain(c) => enc.encode(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileFormat;

    fn round_trip(enc: Encoding, text: &str) -> String {
        let e = Execution {
            id: "0190b3f2-7c1e-7a00-8000-000000000001".into(),
            pattern_name: "p".into(),
            pattern_version: "1.0.0".into(),
            status: ExecutionStatus::Running,
            input: ROption::RSome(text.into()),
            output: ROption::RSome("null".into()),
            error: ROption::RNone,
            started_at: 1_705_276_800_000_001,
            completed_at: ROption::RNone,
            duration_ms: ROption::RNone,
            metadata: ROption::RNone,
            tags: RVec::new(),
        };
        let bytes = Doc::Execution(e.clone()).encode(enc).unwrap();
        let back = enc.decode::<ExecutionDoc>(&bytes).unwrap().into_execution().unwrap();
        assert_eq!(back.output, e.output, "a JSON null document stays a document");
        assert_eq!(back.error, ROption::RNone);
        back.input.unwrap().to_string()
    }

    #[test]
    fn documents_survive_every_encoding_exactly() {
        let tricky = serde_json::json!({
            "yes": "yes", "null": "null", "num": "1.0", "hex": "0x10", "tilde": "~", "empty": "",
            "multi": "line 1\nline 2\n", "colon": "a: b", "unicode": "ünï ☃", "int": 12345678901234567890u64,
            "neg": i64::MIN, "float": 1.5e-7, "big": 1e300, "one": 1.0, "negzero": -0.0, "1": [true, false, null],
            "nested": { "": { "deep": [[]] }, "x": {} }, "quote": "\"'", "hash": "# not a comment",
        })
        .to_string();
        for format in [FileFormat::Yaml, FileFormat::Json] {
            for gzip in [false, true] {
                assert_eq!(round_trip(Encoding { format, gzip }, &tricky), tricky, "{format:?} gzip {gzip}");
            }
        }
    }
}
