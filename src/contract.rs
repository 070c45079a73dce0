//! The backend-neutral storage contract every backend implements. The ABI adapter ([`crate::adapter`])
//! validates input, fills in ids and timestamps, and then calls one of these methods, so a backend receives only
//! validated input with every `id`/timestamp set. A backend fetches, locks and persists; what it stores and
//! every refusal it answers come from [`crate::rules`], so all backends give the same answers. The returned future is polled on the caller's thread with the
//! plugin runtime entered (`src/on_caller.rs`): it may spawn, use timers, sockets and the blocking pool, but
//! whatever it waits on must be driven by itself or by the plugin runtime (e.g. PostgreSQL connections polled
//! by the calling future: `postgres::driven`), never by a task that only the caller's executor would run.

use std::future::Future;

use parallax_storage_abi::{
    hosts::{HostReport, HostsReport},
    AuditEntry, AuditQuery, Execution, ExecutionEvent, ExecutionFilter, ExecutionUpdate, Health,
    MigrationInfo, MigrationReport, NewAuditEntry, NewEvent, NewExecution, NewPattern, Pattern,
};

use crate::{error::Result, rules::Completion, validate::Page};

/// Cleanup and retention ([`crate::retention::Store`]), archive ([`crate::archive::Store`]) and metrics
/// ([`crate::metrics::Source`]) are part of every backend's contract.
pub trait Contract: crate::transfer::Store + crate::metrics::Source + Send + Sync + 'static {
    /// `id_from_client`: the caller chose the id (it may be taken); otherwise the adapter generated a UUIDv7.
    /// Build the stored version with [`crate::rules::stored_pattern`].
    fn put_pattern(
        &self,
        p: NewPattern,
        id_from_client: bool,
    ) -> impl Future<Output = Result<Pattern>> + Send;
    fn get_pattern(&self, name: String, version: String) -> impl Future<Output = Result<Pattern>> + Send;
    /// Every version of `name`, in any order (the adapter sorts them with [`crate::rules::sort_versions`]).
    fn pattern_versions(&self, name: String) -> impl Future<Output = Result<Vec<Pattern>>> + Send;
    /// Every version of up to `page.limit + 1` names after the cursor name, ordered by name.
    fn patterns_after(&self, page: Page<String>) -> impl Future<Output = Result<Vec<Pattern>>> + Send;
    fn delete_pattern(&self, name: String, version: String) -> impl Future<Output = Result<()>> + Send;

    /// `id_from_client`: the caller chose the id (it may collide); otherwise the adapter generated a UUIDv7.
    fn create_execution(
        &self,
        e: NewExecution,
        id_from_client: bool,
    ) -> impl Future<Output = Result<Execution>> + Send;
    fn update_execution(
        &self,
        id: String,
        u: ExecutionUpdate,
    ) -> impl Future<Output = Result<Execution>> + Send;
    /// The completion's time is decided by the adapter ([`crate::rules::completion`]).
    fn complete_execution(&self, id: String, c: Completion)
        -> impl Future<Output = Result<Execution>> + Send;
    fn get_execution(&self, id: String) -> impl Future<Output = Result<Execution>> + Send;
    /// Up to `page.limit + 1` rows after the cursor, newest first (`started_at` desc, id desc).
    fn list_executions(
        &self,
        f: ExecutionFilter,
        page: Page<(i64, String)>,
    ) -> impl Future<Output = Result<Vec<Execution>>> + Send;
    fn count_executions(&self, f: ExecutionFilter) -> impl Future<Output = Result<u64>> + Send;

    /// `e.recorded_at` is set; `event_id` is the new event's id.
    fn append_event(
        &self,
        execution_id: String,
        event_id: String,
        e: NewEvent,
    ) -> impl Future<Output = Result<ExecutionEvent>> + Send;
    fn list_events(&self, execution_id: String) -> impl Future<Output = Result<Vec<ExecutionEvent>>> + Send;

    /// All or nothing. Every entry has its id and timestamp set.
    fn append_audit(&self, entries: Vec<NewAuditEntry>) -> impl Future<Output = Result<()>> + Send;
    /// Up to `page.limit + 1` entries after the cursor, newest first (timestamp desc, id desc).
    fn query_audit(
        &self,
        q: AuditQuery,
        page: Page<(i64, String)>,
    ) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;

    fn migration_status(&self) -> impl Future<Output = Result<Vec<MigrationInfo>>> + Send;
    fn migrate_up(&self) -> impl Future<Output = Result<MigrationReport>> + Send;
    fn migrate_down(&self) -> impl Future<Output = Result<MigrationReport>> + Send;
    fn migrate_to(&self, version: String) -> impl Future<Output = Result<MigrationReport>> + Send;

    /// Records `version` (a full embedded version, resolved by the backend) as applied without running it.
    fn mark_migration_applied(&self, version: String)
        -> impl Future<Output = Result<MigrationReport>> + Send;

    /// Executions whose input, output or error string values contain every term (lower-case words), best
    /// first, ties newest first; up to `page.limit + 1` hits after skipping `page.after` hits.
    fn search_executions(
        &self,
        terms: Vec<String>,
        page: Page<usize>,
    ) -> impl Future<Output = Result<Vec<(Execution, f64)>>> + Send;
    /// Pattern versions whose name, description or definition string values contain every term; as above.
    fn search_patterns(
        &self,
        terms: Vec<String>,
        page: Page<usize>,
    ) -> impl Future<Output = Result<Vec<(Pattern, f64)>>> + Send;

    fn health(&self) -> impl Future<Output = Result<Health>> + Send;
    /// The `hosts` maintenance op: every host this storage object talks to, probed now. The default (SQLite,
    /// file store) is one `local` row built from [`Contract::health`]; PostgreSQL lists the primary and each
    /// replica with the router's state.
    fn hosts_report(&self) -> impl Future<Output = Result<HostsReport>> + Send {
        async {
            let h = self.health().await?;
            Ok(HostsReport {
                read_preference: "primary".into(),
                max_replica_lag_ms: None,
                hosts: vec![HostReport {
                    role: "local".into(),
                    address: h.location.to_string(),
                    reachable: true,
                    server_role: None,
                    latency_us: Some(h.latency_us),
                    replay_lag_ms: None,
                    replay_lag_bytes: None,
                    state: "up".into(),
                    receives_reads: true,
                    reads: 0,
                    error: None,
                }],
            })
        }
    }
    /// Stops background work and closes connections. Called once.
    fn shutdown(&self) -> impl Future<Output = Result<()>> + Send;

    /// Called (synchronously) when the storage object is dropped without `shutdown()`, after its runtime was
    /// told to stop: release what a reopen needs (the single writer's connection or lock) if that can be done
    /// without waiting for queued writes. The backend itself may be dropped a moment later, when the runtime's
    /// workers drop the tasks that still hold it.
    fn close_on_drop(&self) {}
}
