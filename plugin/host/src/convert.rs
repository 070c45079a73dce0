//! The one place where plain types meet the ABI's FFI types (datafusion-ffi's split: FFI types on the
//! boundary, plain types for the people who use it). Everything else in this crate speaks plain Rust.
//!
//! Going in is infallible (ids print, documents are already valid JSON text, times are microseconds). Coming
//! out parses ids: a plugin that sends an id that is not a UUID has a bug, reported as `Internal` naming the
//! value. Documents are passed through as text (the plugin validated them), so reading one costs no parsing.
//! Unknown enum values (a newer peer) are carried both ways as `Unknown(raw)`.

use abi_stable::std_types::{ROption, RResult, RString, RVec};
use parallax_storage_abi as abi;

use crate::{error::*, types::*};

/// Plain → FFI.
pub(crate) trait ToFfi {
    type Ffi;
    fn to_ffi(self) -> Self::Ffi;
}

/// FFI → plain; fails only on a plugin bug (an id that is not a UUID).
pub(crate) trait FromFfi: Sized {
    type Ffi;
    fn from_ffi(ffi: Self::Ffi) -> Result<Self, Error>;
}

pub(crate) fn rs(s: &str) -> RString {
    RString::from(s)
}

/// A config section as the JSON text `open` and `check_config` take.
pub(crate) fn config_text(section: &serde_json::Value) -> RString {
    RString::from(section.to_string())
}

/// A plugin log event, owned, with the plain level.
pub(crate) fn plugin_log(r: &abi::LogRecord<'_>) -> crate::logs::PluginLog {
    crate::logs::PluginLog {
        level: LogLevel::from_abi(r.level),
        target: r.target.to_string(),
        message: r.message.to_string(),
        fields: r.fields.iter().map(|f| (f.name.to_string(), f.value.to_string())).collect(),
    }
}

pub(crate) fn id_ffi(id: Uuid) -> RString {
    RString::from(id.hyphenated().to_string())
}

fn id(s: RString) -> Result<Uuid, Error> {
    Uuid::parse_str(&s).map_err(|e| {
        Error::internal(format!("the plugin answered with an id that is not a UUID: {s:?} ({e})"))
    })
}

fn s(s: RString) -> String {
    s.into_string()
}

fn os(o: ROption<RString>) -> Option<String> {
    o.into_option().map(RString::into_string)
}

fn ros(o: Option<String>) -> ROption<RString> {
    o.map(RString::from).into()
}

fn json(s: RString) -> Json {
    Json::trusted(s.into_string())
}

fn ojson(o: ROption<RString>) -> Option<Json> {
    o.into_option().map(json)
}

fn rjson(o: Option<Json>) -> ROption<RString> {
    o.map(|j| RString::from(j.into_string())).into()
}

fn rid(o: Option<Uuid>) -> ROption<RString> {
    o.map(id_ffi).into()
}

fn ts(t: i64) -> Timestamp {
    Timestamp::from_micros(t)
}

fn ots(t: ROption<i64>) -> Option<Timestamp> {
    t.into_option().map(ts)
}

fn rts(t: Option<Timestamp>) -> ROption<i64> {
    t.map(Timestamp::as_micros).into()
}

fn strings(v: RVec<RString>) -> Vec<String> {
    v.into_iter().map(RString::into_string).collect()
}

fn rstrings(v: Vec<String>) -> RVec<RString> {
    v.into_iter().map(RString::from).collect()
}

/// The result of a call, converted.
pub(crate) fn answer<P: FromFfi>(r: RResult<P::Ffi, abi::StorageError>) -> Result<P, Error> {
    P::from_ffi(r.into_result().map_err(error)?)
}

pub(crate) fn error(e: abi::StorageError) -> Error {
    Error::new(kind(e.kind), e.message.into_string())
}

fn kind(k: abi::ErrorKind) -> ErrorKind {
    match k {
        abi::ErrorKind::NotFound => ErrorKind::NotFound,
        abi::ErrorKind::Conflict => ErrorKind::Conflict,
        abi::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
        abi::ErrorKind::Unavailable => ErrorKind::Unavailable,
        abi::ErrorKind::Timeout => ErrorKind::Timeout,
        abi::ErrorKind::Schema => ErrorKind::Schema,
        abi::ErrorKind::Unsupported => ErrorKind::Unsupported,
        abi::ErrorKind::Internal => ErrorKind::Internal,
        abi::ErrorKind::Panicked => ErrorKind::Panicked,
        other => ErrorKind::Unknown(other.raw()),
    }
}

macro_rules! enum_conv {
    ($plain:ident, $ffi:ty, [$($v:ident),+]) => {
        impl ToFfi for $plain {
            type Ffi = $ffi;
            fn to_ffi(self) -> $ffi {
                match self {
                    $($plain::$v => <$ffi>::$v,)+
                    $plain::Unknown(raw) => <$ffi>::from_raw(raw),
                }
            }
        }
        impl $plain {
            #[allow(dead_code)] // not every enum comes back from the plugin
            pub(crate) fn from_abi(v: $ffi) -> $plain {
                match v {
                    $(<$ffi>::$v => $plain::$v,)+
                    other => $plain::Unknown(other.raw()),
                }
            }
        }
    };
}

enum_conv!(ExecutionStatus, abi::ExecutionStatus, [Pending, Running, Completed, Failed, Cancelled]);
enum_conv!(EventKind, abi::EventKind, [AgentAssignment, StepResult]);
enum_conv!(PingMode, abi::PingMode, [Echo, Panic, PanicInPrepare]);
enum_conv!(LogLevel, abi::LogLevel, [Error, Warn, Info, Debug, Trace]);

impl ToFfi for OpenOptions {
    type Ffi = abi::OpenOptions;
    fn to_ffi(self) -> abi::OpenOptions {
        abi::OpenOptions { maintenance: self.maintenance }
    }
}

impl ToFfi for Page {
    type Ffi = abi::PageRequest;
    fn to_ffi(self) -> abi::PageRequest {
        abi::PageRequest { limit: self.limit, cursor: ros(self.cursor) }
    }
}

impl ToFfi for NewPattern {
    type Ffi = abi::NewPattern;
    fn to_ffi(self) -> abi::NewPattern {
        abi::NewPattern {
            id: rid(self.id),
            name: self.name.into(),
            version: self.version.into(),
            description: ros(self.description),
            definition: self.definition.into_string().into(),
            created_by: ros(self.created_by),
        }
    }
}

impl ToFfi for NewExecution {
    type Ffi = abi::NewExecution;
    fn to_ffi(self) -> abi::NewExecution {
        abi::NewExecution {
            id: rid(self.id),
            pattern_name: self.pattern_name.into(),
            pattern_version: self.pattern_version.into(),
            status: self.status.to_ffi(),
            input: rjson(self.input),
            metadata: rjson(self.metadata),
            tags: rstrings(self.tags),
            started_at: rts(self.started_at),
        }
    }
}

impl ToFfi for ExecutionUpdate {
    type Ffi = abi::ExecutionUpdate;
    fn to_ffi(self) -> abi::ExecutionUpdate {
        abi::ExecutionUpdate {
            status: self.status.map(ToFfi::to_ffi).into(),
            output: rjson(self.output),
            error: rjson(self.error),
            metadata: rjson(self.metadata),
        }
    }
}

impl ToFfi for ExecutionCompletion {
    type Ffi = abi::ExecutionCompletion;
    fn to_ffi(self) -> abi::ExecutionCompletion {
        abi::ExecutionCompletion {
            status: self.status.to_ffi(),
            output: rjson(self.output),
            error: rjson(self.error),
            completed_at: rts(self.completed_at),
        }
    }
}

impl ToFfi for ExecutionFilter {
    type Ffi = abi::ExecutionFilter;
    fn to_ffi(self) -> abi::ExecutionFilter {
        abi::ExecutionFilter {
            pattern_name: ros(self.pattern_name),
            pattern_version: ros(self.pattern_version),
            statuses: self.statuses.into_iter().map(ToFfi::to_ffi).collect(),
            started_from: rts(self.started_from),
            started_until: rts(self.started_until),
            tags: rstrings(self.tags),
        }
    }
}

impl ToFfi for NewEvent {
    type Ffi = abi::NewEvent;
    fn to_ffi(self) -> abi::NewEvent {
        abi::NewEvent {
            kind: self.kind.to_ffi(),
            payload: self.payload.into_string().into(),
            recorded_at: rts(self.recorded_at),
        }
    }
}

impl ToFfi for NewAuditEntry {
    type Ffi = abi::NewAuditEntry;
    fn to_ffi(self) -> abi::NewAuditEntry {
        abi::NewAuditEntry {
            id: rid(self.id),
            timestamp: rts(self.timestamp),
            action: self.action.into(),
            actor: ros(self.actor),
            resource_type: ros(self.resource_type),
            resource_id: ros(self.resource_id),
            details: rjson(self.details),
            ip_address: ros(self.ip_address),
            user_agent: ros(self.user_agent),
        }
    }
}

impl ToFfi for AuditQuery {
    type Ffi = abi::AuditQuery;
    fn to_ffi(self) -> abi::AuditQuery {
        abi::AuditQuery {
            actor: ros(self.actor),
            action: ros(self.action),
            resource_type: ros(self.resource_type),
            resource_id: ros(self.resource_id),
            from: rts(self.from),
            until: rts(self.until),
        }
    }
}

impl FromFfi for () {
    type Ffi = ();
    fn from_ffi(_: ()) -> Result<(), Error> {
        Ok(())
    }
}

impl FromFfi for u64 {
    type Ffi = u64;
    fn from_ffi(n: u64) -> Result<u64, Error> {
        Ok(n)
    }
}

/// A text answer (the maintenance response document).
pub(crate) struct Text(pub String);

impl FromFfi for Text {
    type Ffi = RString;
    fn from_ffi(s: RString) -> Result<Text, Error> {
        Ok(Text(s.into_string()))
    }
}

impl FromFfi for Uuid {
    type Ffi = RString;
    fn from_ffi(s: RString) -> Result<Uuid, Error> {
        id(s)
    }
}

impl<T: FromFfi> FromFfi for Vec<T> {
    type Ffi = RVec<T::Ffi>;
    fn from_ffi(v: RVec<T::Ffi>) -> Result<Vec<T>, Error> {
        v.into_iter().map(T::from_ffi).collect()
    }
}

pub(crate) fn plugin_info(i: abi::PluginInfo) -> PluginInfo {
    {
        PluginInfo {
            plugin_version: s(i.plugin_version),
            abi_version: s(i.abi_version),
            backends: i
                .backends
                .into_iter()
                .map(|b| BackendInfo {
                    name: s(b.name),
                    available: b.available,
                    note: s(b.note),
                    migrations: strings(b.migrations),
                })
                .collect(),
        }
    }
}

impl FromFfi for ConfigReport {
    type Ffi = abi::ConfigReport;
    fn from_ffi(r: abi::ConfigReport) -> Result<Self, Error> {
        Ok(ConfigReport {
            backend: s(r.backend),
            effective: json(r.effective_json),
            warnings: strings(r.warnings),
        })
    }
}

impl FromFfi for Pattern {
    type Ffi = abi::Pattern;
    fn from_ffi(p: abi::Pattern) -> Result<Self, Error> {
        Ok(Pattern {
            id: id(p.id)?,
            name: s(p.name),
            version: s(p.version),
            description: os(p.description),
            definition: json(p.definition),
            created_at: ts(p.created_at),
            created_by: os(p.created_by),
        })
    }
}

impl FromFfi for Execution {
    type Ffi = abi::Execution;
    fn from_ffi(e: abi::Execution) -> Result<Self, Error> {
        Ok(Execution {
            id: id(e.id)?,
            pattern_name: s(e.pattern_name),
            pattern_version: s(e.pattern_version),
            status: ExecutionStatus::from_abi(e.status),
            input: ojson(e.input),
            output: ojson(e.output),
            error: ojson(e.error),
            started_at: ts(e.started_at),
            completed_at: ots(e.completed_at),
            duration_ms: e.duration_ms.into_option(),
            metadata: ojson(e.metadata),
            tags: strings(e.tags),
        })
    }
}

impl FromFfi for ExecutionEvent {
    type Ffi = abi::ExecutionEvent;
    fn from_ffi(e: abi::ExecutionEvent) -> Result<Self, Error> {
        Ok(ExecutionEvent {
            id: id(e.id)?,
            execution_id: id(e.execution_id)?,
            seq: e.seq,
            kind: EventKind::from_abi(e.kind),
            payload: json(e.payload),
            recorded_at: ts(e.recorded_at),
        })
    }
}

impl FromFfi for AuditEntry {
    type Ffi = abi::AuditEntry;
    fn from_ffi(a: abi::AuditEntry) -> Result<Self, Error> {
        Ok(AuditEntry {
            id: id(a.id)?,
            timestamp: ts(a.timestamp),
            action: s(a.action),
            actor: os(a.actor),
            resource_type: os(a.resource_type),
            resource_id: os(a.resource_id),
            details: ojson(a.details),
            ip_address: os(a.ip_address),
            user_agent: os(a.user_agent),
        })
    }
}

impl FromFfi for ExecutionHit {
    type Ffi = abi::ExecutionHit;
    fn from_ffi(h: abi::ExecutionHit) -> Result<Self, Error> {
        Ok(ExecutionHit { execution: Execution::from_ffi(h.execution)?, rank: h.rank })
    }
}

impl FromFfi for PatternHit {
    type Ffi = abi::PatternHit;
    fn from_ffi(h: abi::PatternHit) -> Result<Self, Error> {
        Ok(PatternHit { pattern: Pattern::from_ffi(h.pattern)?, rank: h.rank })
    }
}

macro_rules! page_conv {
    ($ffi:ty, $item:ty) => {
        impl FromFfi for Listed<$item> {
            type Ffi = $ffi;
            fn from_ffi(p: $ffi) -> Result<Self, Error> {
                Ok(Listed { items: Vec::<$item>::from_ffi(p.items)?, next_cursor: os(p.next_cursor) })
            }
        }
    };
}

page_conv!(abi::PatternPage, Pattern);
page_conv!(abi::ExecutionPage, Execution);
page_conv!(abi::AuditPage, AuditEntry);
page_conv!(abi::ExecutionSearchPage, ExecutionHit);
page_conv!(abi::PatternSearchPage, PatternHit);

impl FromFfi for MigrationInfo {
    type Ffi = abi::MigrationInfo;
    fn from_ffi(m: abi::MigrationInfo) -> Result<Self, Error> {
        Ok(MigrationInfo {
            version: s(m.version),
            name: s(m.name),
            applied: m.applied,
            applied_at: ots(m.applied_at),
        })
    }
}

impl FromFfi for MigrationReport {
    type Ffi = abi::MigrationReport;
    fn from_ffi(r: abi::MigrationReport) -> Result<Self, Error> {
        Ok(MigrationReport {
            applied: strings(r.applied),
            reverted: strings(r.reverted),
            status: Vec::<MigrationInfo>::from_ffi(r.status)?,
        })
    }
}

impl FromFfi for Health {
    type Ffi = abi::Health;
    fn from_ffi(h: abi::Health) -> Result<Self, Error> {
        Ok(Health {
            backend: s(h.backend),
            server_version: s(h.server_version),
            location: s(h.location),
            latency_us: h.latency_us,
            schema_version: os(h.schema_version),
            pending_migrations: h.pending_migrations,
            warnings: strings(h.warnings),
        })
    }
}

// ---------------------------------------------------------------- maintenance documents (serde types)

pub(crate) fn maintenance_request(r: &MaintenanceRequest) -> RString {
    abi::maintenance::MaintenanceRequest::new(&r.op, r.version, r.params.clone()).to_json().into()
}

pub(crate) fn maintenance_response(text: &str) -> Result<MaintenanceResponse, Error> {
    let r = abi::maintenance::MaintenanceResponse::parse(text).map_err(error)?;
    Ok(MaintenanceResponse { op: r.op, version: r.version, result: r.result })
}

pub(crate) fn describe(r: &MaintenanceResponse) -> Result<Describe, Error> {
    let ffi = abi::maintenance::MaintenanceResponse {
        op: r.op.clone(),
        version: r.version,
        result: r.result.clone(),
    };
    let d: abi::maintenance::Describe = ffi.result().map_err(error)?;
    Ok(Describe {
        abi_version: d.abi_version,
        plugin_version: d.plugin_version,
        ops: d.ops.into_iter().map(|o| OpVersions { op: o.op, versions: o.versions }).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_cross_both_ways() {
        assert_eq!(ExecutionStatus::Unknown(200).to_ffi().raw(), 200);
        assert_eq!(ExecutionStatus::from_abi(abi::ExecutionStatus::from_raw(9)), ExecutionStatus::Unknown(9));
        assert_eq!(ExecutionStatus::from_abi(abi::ExecutionStatus::Failed), ExecutionStatus::Failed);
        assert_eq!(kind(abi::ErrorKind::from_raw(77)), ErrorKind::Unknown(77));
        assert_eq!(EventKind::StepResult.to_ffi(), abi::EventKind::StepResult);
    }

    #[test]
    fn a_bad_id_from_the_plugin_is_an_internal_error_naming_it() {
        let e = Uuid::from_ffi("nope".into()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.message().contains("\"nope\""), "{e}");
    }
}
