//! The plain Rust types of the host API: what callers build and what calls return.
//!
//! None of these is an FFI type; [`crate::convert`] (private) turns them into the ABI's `#[repr(C)]` types at
//! the boundary and back. Ids are [`Uuid`]s, times are [`Timestamp`]s, JSON documents are [`Json`] (validated
//! JSON text), statuses and kinds are Rust enums with an `Unknown(u8)` variant for values a newer plugin may
//! send.

use std::{fmt, str::FromStr};

pub use uuid::Uuid;

use crate::error::Error;

// ---------------------------------------------------------------- timestamps

/// A point in time, UTC, with microsecond precision: what the store keeps.
///
/// This is a newtype over microseconds since the Unix epoch rather than [`jiff::Timestamp`] because the plugin
/// accepts every instant up to `9999-12-31T23:59:59.999999Z`, and `jiff::Timestamp` stops about a day earlier
/// (`9999-12-30T22:00:00.999999999Z`, so that every value has a civil date in every time zone). A record stored
/// with a time in that last day must still be readable through this API, so the conversion to jiff is the one
/// fallible step ([`Timestamp::to_jiff`], an `InvalidInput` error naming the value), and reading, comparing and
/// printing never fail. The newtype also costs nothing per call: it is exactly what crosses the boundary.
///
/// ```
/// use parallax_storage_host::Timestamp;
///
/// let t: Timestamp = "2024-01-15T00:00:00Z".parse().unwrap();
/// assert_eq!(t.as_micros(), 1_705_276_800_000_000);
/// assert_eq!(t.to_string(), "2024-01-15T00:00:00Z");
/// // The last instant the plugin accepts prints, but has no jiff::Timestamp.
/// let last = Timestamp::from_micros(253_402_300_799_999_999);
/// assert_eq!(last.to_string(), "9999-12-31T23:59:59.999999Z");
/// assert!(last.to_jiff().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `micros` microseconds after 1970-01-01T00:00:00Z (negative: before).
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since 1970-01-01T00:00:00Z.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Now, from the system clock.
    pub fn now() -> Self {
        Timestamp::from(jiff::Timestamp::now())
    }

    /// This instant as a [`jiff::Timestamp`]; an `InvalidInput` error naming the value for an instant outside
    /// jiff's range (the last ~26 hours of year 9999 the plugin accepts).
    pub fn to_jiff(self) -> Result<jiff::Timestamp, Error> {
        jiff::Timestamp::from_microsecond(self.0).map_err(|_| {
            Error::invalid(format!(
                "timestamp {self} ({} µs) is outside jiff::Timestamp's range ({} to {}); use it as microseconds \
                 (Timestamp::as_micros) instead",
                self.0,
                jiff::Timestamp::MIN,
                jiff::Timestamp::MAX
            ))
        })
    }

    /// The UTC calendar date and time of this instant (defined for every value the plugin accepts).
    fn civil(self) -> Option<jiff::civil::DateTime> {
        jiff::civil::DateTime::constant(1970, 1, 1, 0, 0, 0, 0)
            .checked_add(jiff::SignedDuration::from_micros(self.0))
            .ok()
    }
}

impl From<jiff::Timestamp> for Timestamp {
    /// Truncates to whole microseconds (towards the past), as the store does.
    fn from(t: jiff::Timestamp) -> Self {
        Timestamp(t.as_nanosecond().div_euclid(1000) as i64)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC (`2024-01-15T00:00:00.5Z`); a value outside year 0..=9999 prints as `@<micros>µs`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.civil() {
            Some(dt) => write!(f, "{}Z", dt.strftime("%Y-%m-%dT%H:%M:%S%.f")),
            None => write!(f, "@{}µs", self.0),
        }
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    /// An RFC 3339 instant (any offset), e.g. `2024-01-15T00:00:00Z`.
    fn from_str(s: &str) -> Result<Self, Error> {
        if let Ok(t) = s.parse::<jiff::Timestamp>() {
            return Ok(t.into());
        }
        // The last day of 9999 (beyond jiff::Timestamp), written in UTC.
        if let Some(dt) = s.strip_suffix('Z').and_then(|c| c.parse::<jiff::civil::DateTime>().ok()) {
            let epoch = jiff::civil::DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
            if let Ok(d) = epoch.duration_until(dt).as_micros().try_into() {
                return Ok(Timestamp(d));
            }
        }
        Err(Error::invalid(format!(
            "{s:?} is not an RFC 3339 timestamp; expected e.g. 2024-01-15T00:00:00Z or 2024-01-15T01:00:00+01:00"
        )))
    }
}

// ---------------------------------------------------------------- JSON documents

/// A JSON document: validated JSON text.
///
/// What the store keeps and returns, byte for byte (the plugin stores documents in a canonical compact form);
/// reading a document costs no parsing until [`Json::value`] or [`Json::deserialize`] asks for it. Build one
/// from a [`serde_json::Value`] (infallible), from any `Serialize` value, or from text ([`Json::parse`], which
/// refuses invalid JSON).
///
/// ```
/// use parallax_storage_host::Json;
/// use serde_json::json;
///
/// let doc = Json::from(json!({ "q": "hello" }));
/// assert_eq!(doc.as_str(), r#"{"q":"hello"}"#);
/// assert_eq!(doc.value()["q"], "hello");
/// assert!(Json::parse("{ not json").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Json(String);

impl Json {
    /// Validates `text` as JSON; an `InvalidInput` error naming the position otherwise.
    pub fn parse(text: impl Into<String>) -> Result<Json, Error> {
        let text = text.into();
        match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            Ok(_) => Ok(Json(text)),
            Err(e) => Err(Error::invalid(format!("not valid JSON ({e}): {}", preview(&text)))),
        }
    }

    /// Any value serde can serialize, e.g. a struct of the caller's own.
    pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Json, Error> {
        serde_json::to_string(value)
            .map(Json)
            .map_err(|e| Error::invalid(format!("the value cannot be written as JSON: {e}")))
    }

    /// Text the plugin validated (its answers).
    pub(crate) fn trusted(text: String) -> Json {
        Json(text)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The document as a [`serde_json::Value`] (parses it).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The document as a `T`; an `InvalidInput` error when it does not have `T`'s shape.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.0).map_err(|e| {
            Error::invalid(format!(
                "document {} does not have the expected shape ({}): {e}",
                preview(&self.0),
                std::any::type_name::<T>()
            ))
        })
    }
}

fn preview(text: &str) -> String {
    let mut p: String = text.chars().take(60).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    format!("{p:?}")
}

impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Self {
        Json(v.to_string())
    }
}

impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Self {
        Json(v.to_string())
    }
}

impl FromStr for Json {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Json::parse(s)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<serde_json::Value> for Json {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.value() == *other
    }
}

// ---------------------------------------------------------------- enums

macro_rules! plain_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this host does not know (sent by a newer plugin, or sent on purpose to test one), with
            /// its wire number.
            Unknown(u8),
        }

        impl $name {
            /// Every value this host knows.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value's name, as the plugin and the CLI spell it; `unknown` for [`Self::Unknown`].
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown(_) => "unknown",
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::Unknown(n) => write!(f, "unknown ({n})"),
                    v => f.write_str(v.as_str()),
                }
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    Error::invalid(format!(
                        "{s:?} is not a valid {}; expected one of {}",
                        stringify!($name),
                        names.join(", ")
                    ))
                })
            }
        }
    };
}

plain_enum! {
    /// Where an execution is in its lifecycle.
    ExecutionStatus {
        /// Created, not started.
        Pending => "pending",
        /// Running.
        Running => "running",
        /// Finished successfully (final).
        Completed => "completed",
        /// Finished with an error (final).
        Failed => "failed",
        /// Stopped before finishing (final).
        Cancelled => "cancelled",
    }
}

impl ExecutionStatus {
    /// Completed, failed and cancelled executions are final. An unknown status is not.
    pub fn is_final(self) -> bool {
        matches!(self, ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled)
    }
}

plain_enum! {
    /// What an execution event records.
    EventKind {
        /// An agent was assigned to a step.
        AgentAssignment => "agent_assignment",
        /// A step produced its result.
        StepResult => "step_result",
    }
}

plain_enum! {
    /// What [`crate::Storage::ping`] does inside the plugin.
    PingMode {
        /// Return at once: measures the cost of a call through the boundary.
        Echo => "echo",
        /// Panic inside the plugin's future: the error comes back as `Panicked`.
        Panic => "panic",
        /// Panic in the synchronous half of the call, before a future exists.
        PanicInPrepare => "panic-in-prepare",
    }
}

plain_enum! {
    /// Severity of a plugin log event.
    LogLevel {
        /// Errors.
        Error => "error",
        /// Warnings.
        Warn => "warn",
        /// Information.
        Info => "info",
        /// Debugging detail.
        Debug => "debug",
        /// Tracing detail.
        Trace => "trace",
    }
}

// ---------------------------------------------------------------- plugin

/// What a plugin build offers ([`crate::Plugin::info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin crate's version.
    pub plugin_version: String,
    /// The storage ABI version it was built with.
    pub abi_version: String,
    /// The backends it knows.
    pub backends: Vec<BackendInfo>,
}

/// One backend of a plugin build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// `sqlite`, `postgresql` or `file`.
    pub name: String,
    /// Whether this build can open the backend; when false, `note` says why.
    pub available: bool,
    /// A remark about the backend.
    pub note: String,
    /// Versions of the migrations embedded for this backend, oldest first.
    pub migrations: Vec<String>,
}

/// The result of validating a config without opening it ([`crate::Plugin::check_config`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigReport {
    /// The backend the config selects.
    pub backend: String,
    /// The effective config, every default filled in and every secret redacted.
    pub effective: Json,
    /// Keys that are configured but not enforced by this build, each with the reason.
    pub warnings: Vec<String>,
}

/// How to open a storage instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open for schema maintenance (the `migrate` calls): never auto-run migrations and do not refuse a schema
    /// that is behind or ahead of the plugin. Data calls may then fail with `Schema`.
    pub maintenance: bool,
}

// ---------------------------------------------------------------- pages

/// One page of a list: at most `limit` items after `cursor`.
///
/// ```
/// use parallax_storage_host::Page;
///
/// let first = Page::first(100);
/// assert_eq!(first, Page { limit: 100, cursor: None });
/// let next = first.after("opaque-cursor");
/// assert_eq!(next.cursor.as_deref(), Some("opaque-cursor"));
/// assert_eq!(Page::default().limit, 0); // the plugin's default page size (50)
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// 1..=1000; 0 means the default (50).
    pub limit: u32,
    /// The `next_cursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
}

impl Page {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Page {
        Page { limit, cursor: None }
    }

    /// The page after the one that answered `cursor`.
    pub fn after(self, cursor: impl Into<String>) -> Page {
        Page { cursor: Some(cursor.into()), ..self }
    }
}

/// A page of a list: its items, and the cursor of the next page when there may be more.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Pass to [`Page::after`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- patterns

/// A pattern version to store ([`crate::Storage::put_pattern`]).
///
/// ```
/// use parallax_storage_host::{Json, NewPattern};
/// use serde_json::json;
///
/// let p = NewPattern::new("summarize", "1.0.0", json!({ "steps": [] })).description("Summarize a text");
/// assert_eq!(p.description.as_deref(), Some("Summarize a text"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NewPattern {
    /// Optional client-chosen id; the plugin generates a UUIDv7 otherwise.
    pub id: Option<Uuid>,
    /// The pattern's name.
    pub name: String,
    /// A semantic version, such as `1.0.0`.
    pub version: String,
    /// A description.
    pub description: Option<String>,
    /// The definition; must be a JSON object.
    pub definition: Json,
    /// Who stored it.
    pub created_by: Option<String>,
}

impl NewPattern {
    /// Pattern `name` version `version` with `definition`, nothing else set.
    pub fn new(name: impl Into<String>, version: impl Into<String>, definition: impl Into<Json>) -> Self {
        NewPattern {
            id: None,
            name: name.into(),
            version: version.into(),
            description: None,
            definition: definition.into(),
            created_by: None,
        }
    }

    /// Sets the id.
    pub fn id(self, id: Uuid) -> Self {
        NewPattern { id: Some(id), ..self }
    }

    /// Sets the description.
    pub fn description(self, d: impl Into<String>) -> Self {
        NewPattern { description: Some(d.into()), ..self }
    }

    /// Sets who stored it.
    pub fn created_by(self, who: impl Into<String>) -> Self {
        NewPattern { created_by: Some(who.into()), ..self }
    }
}

/// A stored pattern version.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    /// Its id.
    pub id: Uuid,
    /// The pattern's name.
    pub name: String,
    /// Its semantic version.
    pub version: String,
    /// Its description.
    pub description: Option<String>,
    /// The definition (a JSON object).
    pub definition: Json,
    /// When it was stored.
    pub created_at: Timestamp,
    /// Who stored it.
    pub created_by: Option<String>,
}

/// One search result: the pattern and its relevance (higher is better; comparable within one result list).
#[derive(Clone, Debug, PartialEq)]
pub struct PatternHit {
    /// The pattern version.
    pub pattern: Pattern,
    /// Its relevance.
    pub rank: f64,
}

// ---------------------------------------------------------------- executions

/// An execution to create ([`crate::Storage::create_execution`]).
///
/// ```
/// use parallax_storage_host::{ExecutionStatus, NewExecution};
/// use serde_json::json;
///
/// let e = NewExecution::new("summarize", "1.0.0").input(json!({ "text": "hello" })).tag("demo");
/// assert_eq!(e.status, ExecutionStatus::Running);
/// // Or with struct update:
/// let e = NewExecution { status: ExecutionStatus::Pending, ..NewExecution::new("summarize", "1.0.0") };
/// assert!(e.tags.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NewExecution {
    /// Optional client-chosen id; the plugin generates a UUIDv7 otherwise.
    pub id: Option<Uuid>,
    /// The pattern run.
    pub pattern_name: String,
    /// Its version.
    pub pattern_version: String,
    /// `Pending` or `Running` (the default).
    pub status: ExecutionStatus,
    /// The input document.
    pub input: Option<Json>,
    /// Free-form metadata.
    pub metadata: Option<Json>,
    /// Tags; duplicates are dropped, order kept.
    pub tags: Vec<String>,
    /// Defaults to now.
    pub started_at: Option<Timestamp>,
}

impl NewExecution {
    /// A running execution of `pattern_name` `pattern_version`, started now, nothing else set.
    pub fn new(pattern_name: impl Into<String>, pattern_version: impl Into<String>) -> Self {
        NewExecution {
            id: None,
            pattern_name: pattern_name.into(),
            pattern_version: pattern_version.into(),
            status: ExecutionStatus::Running,
            input: None,
            metadata: None,
            tags: Vec::new(),
            started_at: None,
        }
    }

    /// Sets the id.
    pub fn id(self, id: Uuid) -> Self {
        NewExecution { id: Some(id), ..self }
    }

    /// Sets the status (`Pending` or `Running`).
    pub fn status(self, status: ExecutionStatus) -> Self {
        NewExecution { status, ..self }
    }

    /// Sets the input document.
    pub fn input(self, input: impl Into<Json>) -> Self {
        NewExecution { input: Some(input.into()), ..self }
    }

    /// Sets the metadata document.
    pub fn metadata(self, metadata: impl Into<Json>) -> Self {
        NewExecution { metadata: Some(metadata.into()), ..self }
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the start time.
    pub fn started_at(self, at: Timestamp) -> Self {
        NewExecution { started_at: Some(at), ..self }
    }
}

/// Fields to change on a non-final execution; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutionUpdate {
    /// `Pending` or `Running` (use [`crate::Storage::complete_execution`] for final states).
    pub status: Option<ExecutionStatus>,
    /// The output document.
    pub output: Option<Json>,
    /// The error document.
    pub error: Option<Json>,
    /// The metadata document.
    pub metadata: Option<Json>,
}

/// How an execution ends ([`crate::Storage::complete_execution`]).
///
/// ```
/// use parallax_storage_host::{ExecutionCompletion, ExecutionStatus};
/// use serde_json::json;
///
/// let done = ExecutionCompletion::new(ExecutionStatus::Completed).output(json!({ "summary": "ok" }));
/// assert!(done.completed_at.is_none()); // now
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionCompletion {
    /// `Completed`, `Failed` or `Cancelled`.
    pub status: ExecutionStatus,
    /// The output document.
    pub output: Option<Json>,
    /// The error document.
    pub error: Option<Json>,
    /// Defaults to now.
    pub completed_at: Option<Timestamp>,
}

impl ExecutionCompletion {
    /// Ends with `status`, now, no documents.
    pub fn new(status: ExecutionStatus) -> Self {
        ExecutionCompletion { status, output: None, error: None, completed_at: None }
    }

    /// Sets the output document.
    pub fn output(self, output: impl Into<Json>) -> Self {
        ExecutionCompletion { output: Some(output.into()), ..self }
    }

    /// Sets the error document.
    pub fn error(self, error: impl Into<Json>) -> Self {
        ExecutionCompletion { error: Some(error.into()), ..self }
    }

    /// Sets the completion time.
    pub fn completed_at(self, at: Timestamp) -> Self {
        ExecutionCompletion { completed_at: Some(at), ..self }
    }
}

/// A stored execution.
#[derive(Clone, Debug, PartialEq)]
pub struct Execution {
    /// Its id.
    pub id: Uuid,
    /// The pattern run.
    pub pattern_name: String,
    /// Its version.
    pub pattern_version: String,
    /// Where it is in its lifecycle.
    pub status: ExecutionStatus,
    /// The input document.
    pub input: Option<Json>,
    /// The output document.
    pub output: Option<Json>,
    /// The error document.
    pub error: Option<Json>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it reached a final status.
    pub completed_at: Option<Timestamp>,
    /// Whole milliseconds from start to completion.
    pub duration_ms: Option<i64>,
    /// The metadata document.
    pub metadata: Option<Json>,
    /// Its tags.
    pub tags: Vec<String>,
}

/// Which executions to list or count: every set field must match; an empty `statuses` or `tags` matches all.
///
/// ```
/// use parallax_storage_host::{ExecutionFilter, ExecutionStatus};
///
/// let f = ExecutionFilter::default().pattern("summarize").status(ExecutionStatus::Failed).tag("nightly");
/// assert_eq!(f.statuses, vec![ExecutionStatus::Failed]);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutionFilter {
    /// Of this pattern.
    pub pattern_name: Option<String>,
    /// Of this pattern version.
    pub pattern_version: Option<String>,
    /// Any of these statuses.
    pub statuses: Vec<ExecutionStatus>,
    /// `started_at >= started_from`.
    pub started_from: Option<Timestamp>,
    /// `started_at < started_until`.
    pub started_until: Option<Timestamp>,
    /// The execution carries every one of these tags.
    pub tags: Vec<String>,
}

impl ExecutionFilter {
    /// Only executions of pattern `name`.
    pub fn pattern(self, name: impl Into<String>) -> Self {
        ExecutionFilter { pattern_name: Some(name.into()), ..self }
    }

    /// Also executions with `status`.
    pub fn status(mut self, status: ExecutionStatus) -> Self {
        self.statuses.push(status);
        self
    }

    /// Only executions carrying `tag` (and the others asked for).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Only executions started in `[from, until)`; `None` leaves a side open.
    pub fn started_between(self, from: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        ExecutionFilter { started_from: from, started_until: until, ..self }
    }
}

/// One search result: the execution and its relevance (higher is better; comparable within one result list).
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionHit {
    /// The execution.
    pub execution: Execution,
    /// Its relevance.
    pub rank: f64,
}

// ---------------------------------------------------------------- events

/// An event to append to a pending or running execution.
///
/// ```
/// use parallax_storage_host::{EventKind, NewEvent};
/// use serde_json::json;
///
/// let ev = NewEvent::new(EventKind::StepResult, json!({ "step": 1, "ok": true }));
/// assert!(ev.recorded_at.is_none());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// What it records.
    pub kind: EventKind,
    /// The assignment or the step's result.
    pub payload: Json,
    /// Defaults to now.
    pub recorded_at: Option<Timestamp>,
}

impl NewEvent {
    /// An event of `kind` with `payload`, recorded now.
    pub fn new(kind: EventKind, payload: impl Into<Json>) -> Self {
        NewEvent { kind, payload: payload.into(), recorded_at: None }
    }
}

/// A stored execution event.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionEvent {
    /// Its id.
    pub id: Uuid,
    /// The execution it belongs to.
    pub execution_id: Uuid,
    /// 1, 2, 3… in append order within the execution.
    pub seq: i64,
    /// What it records.
    pub kind: EventKind,
    /// The assignment or the step's result.
    pub payload: Json,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

// ---------------------------------------------------------------- audit

/// An audit entry to append.
///
/// ```
/// use parallax_storage_host::NewAuditEntry;
///
/// let entry = NewAuditEntry { actor: Some("alice".into()), ..NewAuditEntry::new("pattern.put") };
/// assert_eq!(entry.action, "pattern.put");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewAuditEntry {
    /// Optional client-chosen id.
    pub id: Option<Uuid>,
    /// Defaults to now.
    pub timestamp: Option<Timestamp>,
    /// What was done.
    pub action: String,
    /// Who did it.
    pub actor: Option<String>,
    /// The kind of resource concerned.
    pub resource_type: Option<String>,
    /// The resource concerned.
    pub resource_id: Option<String>,
    /// Details.
    pub details: Option<Json>,
    /// An IPv4/IPv6 address, optionally with a prefix length.
    pub ip_address: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
}

impl NewAuditEntry {
    /// An entry recording `action`, now, nothing else set.
    pub fn new(action: impl Into<String>) -> Self {
        NewAuditEntry { action: action.into(), ..Default::default() }
    }
}

/// A stored audit entry.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Its id.
    pub id: Uuid,
    /// When it happened.
    pub timestamp: Timestamp,
    /// What was done.
    pub action: String,
    /// Who did it.
    pub actor: Option<String>,
    /// The kind of resource concerned.
    pub resource_type: Option<String>,
    /// The resource concerned.
    pub resource_id: Option<String>,
    /// Details.
    pub details: Option<Json>,
    /// The client's address.
    pub ip_address: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
}

/// Which audit entries to list: every set field must match. Results are newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditQuery {
    /// By this actor.
    pub actor: Option<String>,
    /// This action.
    pub action: Option<String>,
    /// On this kind of resource.
    pub resource_type: Option<String>,
    /// On this resource.
    pub resource_id: Option<String>,
    /// `timestamp >= from`.
    pub from: Option<Timestamp>,
    /// `timestamp < until`.
    pub until: Option<Timestamp>,
}

// ---------------------------------------------------------------- migrations and health

/// One migration and whether it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationInfo {
    /// `YYYYMMDDHHMMSS`.
    pub version: String,
    /// Its name.
    pub name: String,
    /// Whether it is applied.
    pub applied: bool,
    /// When it was applied.
    pub applied_at: Option<Timestamp>,
}

/// What a migrate call did, and the status afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied, in order.
    pub applied: Vec<String>,
    /// Versions reverted, in order.
    pub reverted: Vec<String>,
    /// Every migration afterwards.
    pub status: Vec<MigrationInfo>,
}

/// The backend's health ([`crate::Storage::health`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `sqlite`, `postgresql` or `file`.
    pub backend: String,
    /// Server or library version, e.g. `SQLite 3.46.0`.
    pub server_version: String,
    /// Where the data lives, secrets redacted (a path, or a URL without password).
    pub location: String,
    /// Round-trip latency of a trivial query, in microseconds.
    pub latency_us: i64,
    /// The newest applied migration.
    pub schema_version: Option<String>,
    /// How many migrations are pending.
    pub pending_migrations: u32,
    /// Configured but not enforced keys, and other operator notes.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------- maintenance

/// A maintenance request document (`{"op": …, "version": N, "params": {…}}`, see the ABI crate's
/// `maintenance` module).
#[derive(Clone, Debug, PartialEq)]
pub struct MaintenanceRequest {
    /// The operation.
    pub op: String,
    /// The version of the operation's documents.
    pub version: u32,
    /// Its parameters; `null` when it takes none.
    pub params: serde_json::Value,
}

impl MaintenanceRequest {
    /// `op` at document `version` with `params`.
    pub fn new(op: impl Into<String>, version: u32, params: serde_json::Value) -> Self {
        MaintenanceRequest { op: op.into(), version, params }
    }

    /// `{"op":"describe","version":1}`.
    pub fn describe() -> Self {
        Self::new("describe", 1, serde_json::Value::Null)
    }
}

/// A maintenance response document.
#[derive(Clone, Debug, PartialEq)]
pub struct MaintenanceResponse {
    /// The operation.
    pub op: String,
    /// The version of the operation's documents.
    pub version: u32,
    /// Its result.
    pub result: serde_json::Value,
}

/// The result of the `describe` maintenance op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Describe {
    /// The plugin's ABI version.
    pub abi_version: String,
    /// The plugin's version.
    pub plugin_version: String,
    /// Every op the plugin supports, with the document versions of each.
    pub ops: Vec<OpVersions>,
}

/// One supported maintenance op and its document versions, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpVersions {
    /// The op.
    pub op: String,
    /// Its document versions.
    pub versions: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_cover_every_instant_the_plugin_accepts() {
        let last = Timestamp::from_micros(253_402_300_799_999_999);
        assert_eq!(last.to_string().parse::<Timestamp>().unwrap(), last, "the last day of 9999 round-trips");
        let e = last.to_jiff().unwrap_err();
        assert!(
            e.message().contains("9999-12-31T23:59:59.999999Z") && e.message().contains("as_micros"),
            "{e}"
        );
        let t: Timestamp = "2024-01-15T01:00:00.000001+01:00".parse().unwrap();
        assert_eq!(t.as_micros(), 1_705_276_800_000_001);
        assert_eq!(Timestamp::from(t.to_jiff().unwrap()), t);
        assert_eq!(Timestamp::from_micros(0).to_string(), "1970-01-01T00:00:00Z");
        let e = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(e.kind() == crate::ErrorKind::InvalidInput && e.message().contains("\"yesterday\""), "{e}");
        // Sub-microsecond jiff values truncate towards the past, as the store does.
        let j = jiff::Timestamp::from_nanosecond(-1).unwrap();
        assert_eq!(Timestamp::from(j).as_micros(), -1);
    }

    #[test]
    fn documents_are_validated_text() {
        let d = Json::parse(r#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(d.as_str(), r#"{"a": [1, 2]}"#, "kept as written");
        assert_eq!(d, serde_json::json!({ "a": [1, 2] }));
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct A {
            a: Vec<u8>,
        }
        assert_eq!(d.deserialize::<A>().unwrap(), A { a: vec![1, 2] });
        let e = Json::parse("{\"a\": ").unwrap_err();
        assert!(e.message().starts_with("not valid JSON") && e.message().contains("{\\\"a\\\": "), "{e}");
        assert!(d.deserialize::<Vec<u8>>().unwrap_err().message().contains("expected shape"));
    }

    #[test]
    fn enums_name_their_values_and_refuse_unknown_names() {
        assert_eq!("step_result".parse::<EventKind>().unwrap(), EventKind::StepResult);
        assert_eq!(ExecutionStatus::Unknown(9).to_string(), "unknown (9)");
        assert!(!ExecutionStatus::Unknown(9).is_final() && ExecutionStatus::Cancelled.is_final());
        let e = "done".parse::<ExecutionStatus>().unwrap_err();
        assert!(
            e.message().contains("\"done\"") && e.message().contains("pending, running, completed"),
            "{e}"
        );
    }
}
