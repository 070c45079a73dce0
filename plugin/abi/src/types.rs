//! Data types that cross the boundary. All `#[repr(C)]`, all `StableAbi`.

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

/// What a plugin build offers.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginInfo {
    /// The plugin crate's version.
    pub plugin_version: RString,
    /// The storage ABI version the plugin was built with (see the crate docs).
    pub abi_version: RString,
    /// Every backend this build knows.
    pub backends: RVec<BackendInfo>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
/// One backend of a plugin build.
pub struct BackendInfo {
    /// `sqlite`, `postgresql` or `file`.
    pub name: RString,
    /// Whether this build can open the backend; when false, `note` says why.
    pub available: bool,
    /// Why the backend is not available, or another remark; empty when there is none.
    pub note: RString,
    /// Versions of the migrations embedded for this backend, oldest first.
    pub migrations: RVec<RString>,
}

/// The result of validating a config without opening it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ConfigReport {
    /// The backend the config selects.
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
    /// The `next_cursor` of the previous page; none for the first page.
    pub cursor: ROption<RString>,
}

// ---------------------------------------------------------------- patterns

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A pattern version to store.
pub struct NewPattern {
    /// Optional client-supplied UUID; the plugin generates a UUIDv7 otherwise.
    pub id: ROption<RString>,
    /// The name.
    pub name: RString,
    /// A semantic version, such as `1.0.0`.
    pub version: RString,
    /// A free-text description.
    pub description: ROption<RString>,
    /// JSON text; must be an object.
    pub definition: RString,
    /// Who stored it.
    pub created_by: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A stored pattern version.
pub struct Pattern {
    /// Its id (lower-case UUID).
    pub id: RString,
    /// The name.
    pub name: RString,
    /// Its semantic version.
    pub version: RString,
    /// A free-text description.
    pub description: ROption<RString>,
    /// The definition: JSON text of an object.
    pub definition: RString,
    /// When it was stored (µs since the epoch, UTC).
    pub created_at: i64,
    /// Who stored it.
    pub created_by: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A page of patterns.
pub struct PatternPage {
    /// The page's items, in the list's order.
    pub items: RVec<Pattern>,
    /// The cursor of the next page ([`PageRequest::cursor`]); none on the last page.
    pub next_cursor: ROption<RString>,
}

// ---------------------------------------------------------------- executions

open_enum! {
    /// Where an execution is in its lifecycle. Open: the plugin refuses a status it does not know as invalid
    /// input; a host shows one it does not know as `unknown`.
    pub struct ExecutionStatus {
        /// Created, not started.
        Pending = 0 => "pending",
        /// Running.
        Running = 1 => "running",
        /// Finished successfully (final).
        Completed = 2 => "completed",
        /// Finished with an error (final).
        Failed = 3 => "failed",
        /// Stopped before finishing (final).
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
/// An execution to create.
pub struct NewExecution {
    /// Optional client-supplied UUID; the plugin generates a UUIDv7 otherwise.
    pub id: ROption<RString>,
    /// The pattern run.
    pub pattern_name: RString,
    /// The version of the pattern run.
    pub pattern_version: RString,
    /// `Pending` or `Running`.
    pub status: ExecutionStatus,
    /// The input document (JSON text).
    pub input: ROption<RString>,
    /// Free-form metadata (JSON text).
    pub metadata: ROption<RString>,
    /// Tags; duplicates are dropped, order kept.
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
    /// The output document (JSON text).
    pub output: ROption<RString>,
    /// The error document (JSON text).
    pub error: ROption<RString>,
    /// Free-form metadata (JSON text).
    pub metadata: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// How an execution ends.
pub struct ExecutionCompletion {
    /// `Completed`, `Failed` or `Cancelled`.
    pub status: ExecutionStatus,
    /// The output document (JSON text).
    pub output: ROption<RString>,
    /// The error document (JSON text).
    pub error: ROption<RString>,
    /// Defaults to now.
    pub completed_at: ROption<i64>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A stored execution.
pub struct Execution {
    /// Its id (lower-case UUID).
    pub id: RString,
    /// The pattern run.
    pub pattern_name: RString,
    /// The version of the pattern run.
    pub pattern_version: RString,
    /// Where the execution is in its lifecycle.
    pub status: ExecutionStatus,
    /// The input document (JSON text).
    pub input: ROption<RString>,
    /// The output document (JSON text).
    pub output: ROption<RString>,
    /// The error document (JSON text).
    pub error: ROption<RString>,
    /// When it started (µs since the epoch, UTC).
    pub started_at: i64,
    /// When it reached a final status (µs since the epoch, UTC).
    pub completed_at: ROption<i64>,
    /// Whole milliseconds from start to completion.
    pub duration_ms: ROption<i64>,
    /// Free-form metadata (JSON text).
    pub metadata: ROption<RString>,
    /// Tags; duplicates are dropped, order kept.
    pub tags: RVec<RString>,
}

/// Every set field must match; an empty `statuses` or `tags` matches all.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct ExecutionFilter {
    /// Only executions of this pattern.
    pub pattern_name: ROption<RString>,
    /// Only executions of this pattern version.
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
    /// The page's items, in the list's order.
    pub items: RVec<Execution>,
    /// The cursor of the next page ([`PageRequest::cursor`]); none on the last page.
    pub next_cursor: ROption<RString>,
}

// ---------------------------------------------------------------- execution events

open_enum! {
    /// What an execution event records. Open: the plugin refuses a kind it does not know as invalid input.
    pub struct EventKind {
        /// An agent was assigned to a step.
        AgentAssignment = 0 => "agent_assignment",
        /// A step produced its result.
        StepResult = 1 => "step_result",
    }
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// An event to append to a pending or running execution.
pub struct NewEvent {
    /// What the event records.
    pub kind: EventKind,
    /// JSON text: the assignment or the step's result.
    pub payload: RString,
    /// Defaults to now.
    pub recorded_at: ROption<i64>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A stored execution event.
pub struct ExecutionEvent {
    /// Its id (lower-case UUID).
    pub id: RString,
    /// The execution it belongs to.
    pub execution_id: RString,
    /// 1, 2, 3… in append order within the execution.
    pub seq: i64,
    /// What the event records.
    pub kind: EventKind,
    /// The assignment or the step's result (JSON text).
    pub payload: RString,
    /// When it was recorded (µs since the epoch, UTC).
    pub recorded_at: i64,
}

// ---------------------------------------------------------------- audit logs

#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
/// An audit entry to append.
pub struct NewAuditEntry {
    /// Optional client-supplied UUID; the plugin generates a UUIDv7 otherwise.
    pub id: ROption<RString>,
    /// Defaults to now.
    pub timestamp: ROption<i64>,
    /// What was done, e.g. `pattern.create`.
    pub action: RString,
    /// Who did it.
    pub actor: ROption<RString>,
    /// The kind of resource concerned.
    pub resource_type: ROption<RString>,
    /// The resource concerned.
    pub resource_id: ROption<RString>,
    /// JSON text.
    pub details: ROption<RString>,
    /// An IPv4/IPv6 address, optionally with a prefix length.
    pub ip_address: ROption<RString>,
    /// The client's user agent.
    pub user_agent: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A stored audit entry.
pub struct AuditEntry {
    /// Its id (lower-case UUID).
    pub id: RString,
    /// When it happened (µs since the epoch, UTC).
    pub timestamp: i64,
    /// What was done, e.g. `pattern.create`.
    pub action: RString,
    /// Who did it.
    pub actor: ROption<RString>,
    /// The kind of resource concerned.
    pub resource_type: ROption<RString>,
    /// The resource concerned.
    pub resource_id: ROption<RString>,
    /// Details (JSON text).
    pub details: ROption<RString>,
    /// The client's address.
    pub ip_address: ROption<RString>,
    /// The client's user agent.
    pub user_agent: ROption<RString>,
}

/// Every set field must match. Results are newest first.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct AuditQuery {
    /// Only entries by this actor.
    pub actor: ROption<RString>,
    /// Only this action.
    pub action: ROption<RString>,
    /// Only this kind of resource.
    pub resource_type: ROption<RString>,
    /// Only this resource.
    pub resource_id: ROption<RString>,
    /// `timestamp >= from`.
    pub from: ROption<i64>,
    /// `timestamp < until`.
    pub until: ROption<i64>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A page of audit entries, newest first.
pub struct AuditPage {
    /// The page's items, in the list's order.
    pub items: RVec<AuditEntry>,
    /// The cursor of the next page ([`PageRequest::cursor`]); none on the last page.
    pub next_cursor: ROption<RString>,
}

// ---------------------------------------------------------------- full-text search

/// One search result: the record and its relevance (higher is better; comparable within one result list).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ExecutionHit {
    /// The execution.
    pub execution: Execution,
    /// Its relevance: higher is better, comparable within one result list.
    pub rank: f64,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A page of execution search hits, best first.
pub struct ExecutionSearchPage {
    /// The page's items, in the list's order.
    pub items: RVec<ExecutionHit>,
    /// The cursor of the next page ([`PageRequest::cursor`]); none on the last page.
    pub next_cursor: ROption<RString>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// One search result: the pattern version and its relevance.
pub struct PatternHit {
    /// The pattern version.
    pub pattern: Pattern,
    /// Its relevance: higher is better, comparable within one result list.
    pub rank: f64,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// A page of pattern search hits, best first.
pub struct PatternSearchPage {
    /// The page's items, in the list's order.
    pub items: RVec<PatternHit>,
    /// The cursor of the next page ([`PageRequest::cursor`]); none on the last page.
    pub next_cursor: ROption<RString>,
}

// ---------------------------------------------------------------- migrations and health

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// One migration and whether it is applied.
pub struct MigrationInfo {
    /// `YYYYMMDDHHMMSS`.
    pub version: RString,
    /// Its name.
    pub name: RString,
    /// Whether it is applied.
    pub applied: bool,
    /// When it was applied (µs since the epoch, UTC).
    pub applied_at: ROption<i64>,
}

/// What a migrate command did, and the status afterwards.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct MigrationReport {
    /// Versions applied, in order.
    pub applied: RVec<RString>,
    /// Versions reverted, in order.
    pub reverted: RVec<RString>,
    /// Every migration afterwards.
    pub status: RVec<MigrationInfo>,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
/// The backend's health, as `health` answers it.
pub struct Health {
    /// The backend: `sqlite`, `postgresql` or `file`.
    pub backend: RString,
    /// Server or library version, e.g. `SQLite 3.46.0`.
    pub server_version: RString,
    /// Where the data lives, secrets redacted (a path, or a URL without password).
    pub location: RString,
    /// Round-trip latency of a trivial query, in microseconds.
    pub latency_us: i64,
    /// The newest applied migration, if any.
    pub schema_version: ROption<RString>,
    /// How many migrations are pending.
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
