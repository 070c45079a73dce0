use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult, RString, RVec},
};
use async_ffi::{FfiFuture, FutureExt as _};

use crate::*;

/// Every storage call returns one of these: an FFI-safe future the host awaits on any executor. The work is
/// polled on the awaiting thread with the plugin's own tokio runtime entered (no hand-off to another thread);
/// dropping the future does not cancel or corrupt a write, which then completes on the plugin's runtime.
pub type StorageFuture<T> = FfiFuture<RResult<T, StorageError>>;

/// An owned storage object, as returned by the root module's `open`.
pub type StorageBox = StorageBackend_TO<'static, RBox<()>>;

/// The storage contract.
///
/// **Growth rule** (the crate docs argue it): `#[sabi(last_prefix_field)]` stays on `mark_migration_applied`, the
/// last method of ABI 2.0.0, for the whole 2.x major. A minor version appends methods after it, each with a
/// default body that answers `Unsupported` naming the method and the version that added it: a plugin built at
/// an older minor has no entry for the method, and abi_stable then runs that body in the host.
#[sabi_trait]
pub trait StorageBackend: Send + Sync {
    // ----- patterns
    /// Stores a new pattern version; `Conflict` if name+version exists.
    fn put_pattern(&self, pattern: NewPattern) -> StorageFuture<Pattern>;
    /// Pattern `name` at `version`; `NotFound` when there is none.
    fn get_pattern(&self, name: RString, version: RString) -> StorageFuture<Pattern>;
    /// Highest semantic version; ties broken by the newest `created_at`.
    fn get_latest_pattern(&self, name: RString) -> StorageFuture<Pattern>;
    /// All versions of a name, highest semantic version first.
    fn list_pattern_versions(&self, name: RString) -> StorageFuture<RVec<Pattern>>;
    /// The latest version of every pattern, by name.
    fn list_patterns(&self, page: PageRequest) -> StorageFuture<PatternPage>;
    /// Deletes pattern `name` at `version`; `NotFound` when there is none.
    fn delete_pattern(&self, name: RString, version: RString) -> StorageFuture<()>;

    // ----- executions
    /// Creates an execution (`Pending` or `Running`); `Conflict` if its id exists.
    fn create_execution(&self, execution: NewExecution) -> StorageFuture<Execution>;
    /// Changes fields of a pending or running execution; `Conflict` once it is final.
    fn update_execution(&self, id: RString, update: ExecutionUpdate) -> StorageFuture<Execution>;
    /// Sets a final status, `completed_at` and `duration_ms`.
    fn complete_execution(&self, id: RString, completion: ExecutionCompletion) -> StorageFuture<Execution>;
    /// Execution `id`; `NotFound` when there is none.
    fn get_execution(&self, id: RString) -> StorageFuture<Execution>;
    /// One page of the executions matching `filter`, newest first.
    fn list_executions(&self, filter: ExecutionFilter, page: PageRequest) -> StorageFuture<ExecutionPage>;
    /// How many executions match `filter`.
    fn count_executions(&self, filter: ExecutionFilter) -> StorageFuture<u64>;

    // ----- execution events
    /// Appends an agent assignment or step result to a pending or running execution.
    fn append_event(&self, execution_id: RString, event: NewEvent) -> StorageFuture<ExecutionEvent>;
    /// Every event of an execution, in append order.
    fn list_events(&self, execution_id: RString) -> StorageFuture<RVec<ExecutionEvent>>;

    // ----- audit logs
    /// Appends all entries atomically; returns their ids in order.
    fn append_audit(&self, entries: RVec<NewAuditEntry>) -> StorageFuture<RVec<RString>>;
    /// One page of the audit entries matching `query`, newest first.
    fn query_audit(&self, query: AuditQuery, page: PageRequest) -> StorageFuture<AuditPage>;

    // ----- migrations
    /// Every migration and whether it is applied.
    fn migration_status(&self) -> StorageFuture<RVec<MigrationInfo>>;
    /// Applies every pending migration.
    fn migrate_up(&self) -> StorageFuture<MigrationReport>;
    /// Reverts the newest applied migration.
    fn migrate_down(&self) -> StorageFuture<MigrationReport>;
    /// Applies or reverts migrations until `version` (a full version or a unique prefix) is the newest applied.
    fn migrate_to(&self, version: RString) -> StorageFuture<MigrationReport>;

    // ----- operations
    /// Backend, version, location, latency, schema version and pending migrations.
    fn health(&self) -> StorageFuture<Health>;
    /// Does what `mode` says inside the plugin (see [`PingMode`]).
    fn ping(&self, mode: PingMode) -> StorageFuture<()>;
    /// Closes pools and stops the plugin runtime; later calls fail with `Unavailable`.
    fn shutdown(&self) -> StorageFuture<()>;

    // ----- full-text search
    /// Executions whose input, output or error contain every word of `query` (string values of the JSON
    /// documents, case-insensitive), best match first.
    fn search_executions(&self, query: RString, page: PageRequest) -> StorageFuture<ExecutionSearchPage>;
    /// Pattern versions whose name, description or definition (its string values) contain every word of `query`,
    /// best match first.
    fn search_patterns(&self, query: RString, page: PageRequest) -> StorageFuture<PatternSearchPage>;

    // ----- migrations, continued
    /// Records `version` as applied without running it: the operator fixed the schema by hand.
    #[sabi(last_prefix_field)]
    fn mark_migration_applied(&self, version: RString) -> StorageFuture<MigrationReport>;

    // ----- appended in ABI 2.1.0 (optional: a plugin built at 2.0.x has no entry; the default body answers)
    /// Runs one maintenance operation: `request` is a JSON request document, the answer a JSON response
    /// document (see [`crate::maintenance`]). Every low-frequency operation (cleanup, archive, import/export,
    /// metrics, verification) crosses here rather than as a method of its own.
    fn maintenance(&self, request: RString) -> StorageFuture<RString> {
        let _ = request;
        let e =
            crate::maintenance::missing_method("maintenance", crate::maintenance::MAINTENANCE_SINCE, None);
        async move { RResult::RErr(e) }.into_ffi()
    }
}
