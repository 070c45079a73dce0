//! Data types that cross the boundary. All `#[repr(C)]`, all `StableAbi`.

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

/// What a plugin build offers.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginInfo {
    pub plugin_version: RString,
    pub abi_version: RString,
    pub backends: RVec<BackendInfo>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct BackendInfo {
    /// `sqlite`, `postgresql` or `file`.
    pub name: RString,
    /// Whether this build can open the backend; when false, `note` says why.
    pub available: bool,
    pub note: RString,
    /// Versions of the migrations embedded for this backend, oldest first.
    pub migrations: RVec<RString>,
}

/// The result of validating a config without opening it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ConfigReport {
    pub backend: RString,
    /// The effective config as JSON text, every default filled in and every secret redacted.
    pub effective_json: RString,
    /// Keys that are configured but not enforced by this build, each with the reason.
    pub warnings: RVec<RString>,
}

/// How to open a storage instance.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct OpenOptions {
    /// Open for schema maintenance (the `migrate` commands): never auto-run migrations and do not refuse a
    /// schema that is behind or ahead of this plugin. Data calls may then fail with `Schema`.
    pub maintenance: bool,
}

/// Keyset pagination: `cursor` is the opaque `next_cursor` of the previous page.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct PageRequest {
    /// 1..=1000; 0 means the default (50).
    pub limit: u32,
    pub cursor: ROption<RString>,
}

// ---------------------------------------------------------------- patterns

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct NewPattern {
    /// Optional client-supplied UUID; the plugin generates a UUIDv7 otherwise.
    pub id: ROption<RString>,
    pub name: RString,
    /// A semantic version, such as `1.0.0`.
    pub version: RString,
    pub description: ROption<RString>,
    /// JSON text; must be an object.
    pub definition: RString,
    pub created_by: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Pattern {
    pub id: RString,
    pub name: RString,
    pub version: RString,
    pub description: ROption<RString>,
    pub definition: RString,
    pub created_at: i64,
    pub created_by: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PatternPage {
    pub items: RVec<Pattern>,
    pub next_cursor: ROption<RString>,
}

// ---------------------------------------------------------------- executions

open_enum! {
    /// Where an execution is in its lifecycle. Open: the plugin refuses a status it does not know as invalid
    /// input; a host shows one it does not know as `unknown`.
    pub struct ExecutionStatus {
        Pending = 0 => "pending",
        Running = 1 => "running",
        Completed = 2 => "completed",
        Failed = 3 => "failed",
        Cancelled = 4 => "cancelled",
    }
}

impl ExecutionStatus {
    /// Completed, failed and cancelled executions are final. An unknown status is not.
    pub fn is_final(self) -> bool {
        matches!(self, ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled)
    }
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct NewExecution {
    pub id: ROption<RString>,
    pub pattern_name: RString,
    pub pattern_version: RString,
    /// `Pending` or `Running`.
    pub status: ExecutionStatus,
    pub input: ROption<RString>,
    pub metadata: ROption<RString>,
    pub tags: RVec<RString>,
    /// Defaults to now.
    pub started_at: ROption<i64>,
}

/// Fields to change on a non-final execution; `None` leaves a field as it is.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct ExecutionUpdate {
    /// `Pending` or `Running` (use `complete_execution` for final states).
    pub status: ROption<ExecutionStatus>,
    pub output: ROption<RString>,
    pub error: ROption<RString>,
    pub metadata: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ExecutionCompletion {
    /// `Completed`, `Failed` or `Cancelled`.
    pub status: ExecutionStatus,
    pub output: ROption<RString>,
    pub error: ROption<RString>,
    /// Defaults to now.
    pub completed_at: ROption<i64>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Execution {
    pub id: RString,
    pub pattern_name: RString,
    pub pattern_version: RString,
    pub status: ExecutionStatus,
    pub input: ROption<RString>,
    pub output: ROption<RString>,
    pub error: ROption<RString>,
    pub started_at: i64,
    pub completed_at: ROption<i64>,
    pub duration_ms: ROption<i64>,
    pub metadata: ROption<RString>,
    pub tags: RVec<RString>,
}

/// Every set field must match; an empty `statuses` or `tags` matches all.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct ExecutionFilter {
    pub pattern_name: ROption<RString>,
    pub pattern_version: ROption<RString>,
    /// Any of these statuses.
    pub statuses: RVec<ExecutionStatus>,
    /// `started_at >= started_from`.
    pub started_from: ROption<i64>,
    /// `started_at < started_until`.
    pub started_until: ROption<i64>,
    /// The execution carries every one of these tags.
    pub tags: RVec<RString>,
}

/// Newest first (`started_at` desc, then id desc).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ExecutionPage {
    pub items: RVec<Execution>,
    pub next_cursor: ROption<RString>,
}

// ---------------------------------------------------------------- execution events

open_enum! {
    /// What an execution event records. Open: the plugin refuses a kind it does not know as invalid input.
    pub struct EventKind {
        AgentAssignment = 0 => "agent_assignment",
        StepResult = 1 => "step_result",
    }
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub kind: EventKind,
    /// JSON text: the assignment or the step's result.
    pub payload: RString,
    /// Defaults to now.
    pub recorded_at: ROption<i64>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ExecutionEvent {
    pub id: RString,
    pub execution_id: RString,
    /// 1, 2, 3… in append order within the execution.
    pub seq: i64,
    pub kind: EventKind,
    pub payload: RString,
    pub recorded_at: i64,
}

// ---------------------------------------------------------------- audit logs

#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct NewAuditEntry {
    pub id: ROption<RString>,
    /// Defaults to now.
    pub timestamp: ROption<i64>,
    pub action: RString,
    pub actor: ROption<RString>,
    pub resource_type: ROption<RString>,
    pub resource_id: ROption<RString>,
    /// JSON text.
    pub details: ROption<RString>,
    /// An IPv4/IPv6 address, optionally with a prefix length.
    pub ip_address: ROption<RString>,
    pub user_agent: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub id: RString,
    pub timestamp: i64,
    pub action: RString,
    pub actor: ROption<RString>,
    pub resource_type: ROption<RString>,
    pub resource_id: ROption<RString>,
    pub details: ROption<RString>,
    pub ip_address: ROption<RString>,
    pub user_agent: ROption<RString>,
}

/// Every set field must match. Results are newest first.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct AuditQuery {
    pub actor: ROption<RString>,
    pub action: ROption<RString>,
    pub resource_type: ROption<RString>,
    pub resource_id: ROption<RString>,
    /// `timestamp >= from`.
    pub from: ROption<i64>,
    /// `timestamp < until`.
    pub until: ROption<i64>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct AuditPage {
    pub items: RVec<AuditEntry>,
    pub next_cursor: ROption<RString>,
}

// ---------------------------------------------------------------- full-text search

/// One search result: the record and its relevance (higher is better; comparable within one result list).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ExecutionHit {
    pub execution: Execution,
    pub rank: f64,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ExecutionSearchPage {
    pub items: RVec<ExecutionHit>,
    pub next_cursor: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PatternHit {
    pub pattern: Pattern,
    pub rank: f64,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PatternSearchPage {
    pub items: RVec<PatternHit>,
    pub next_cursor: ROption<RString>,
}

// ---------------------------------------------------------------- migrations and health

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct MigrationInfo {
    /// `YYYYMMDDHHMMSS`.
    pub version: RString,
    pub name: RString,
    pub applied: bool,
    pub applied_at: ROption<i64>,
}

/// What a migrate command did, and the status afterwards.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct MigrationReport {
    pub applied: RVec<RString>,
    pub reverted: RVec<RString>,
    pub status: RVec<MigrationInfo>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Health {
    pub backend: RString,
    /// Server or library version, e.g. `SQLite 3.46.0`.
    pub server_version: RString,
    /// Where the data lives, secrets redacted (a path, or a URL without password).
    pub location: RString,
    /// Round-trip latency of a trivial query, in microseconds.
    pub latency_us: i64,
    pub schema_version: ROption<RString>,
    pub pending_migrations: u32,
    /// Configured but not enforced keys, and other operator notes.
    pub warnings: RVec<RString>,
}

open_enum! {
    /// What `ping` does inside the plugin. Open: a plugin answers a mode it does not know with `Unsupported`.
    pub struct PingMode {
        /// Return at once: measures the cost of a call through the boundary and the plugin runtime.
        Echo = 0 => "echo",
        /// Panic inside the plugin's future: proves that panics come back as `ErrorKind::Panicked` and the host
        /// survives.
        Panic = 1 => "panic",
        /// Panic in the synchronous half of the call, before a future exists.
        PanicInPrepare = 2 => "panic-in-prepare",
    }
}
