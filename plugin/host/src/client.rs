//! A safe async client over the plugin's FFI storage object: plain `Result`s, `&str` arguments, cheap clones.

use std::sync::Arc;

use abi_stable::std_types::{RString, RVec};
use parallax_storage_abi::{
    maintenance::{self, Describe, MaintenanceRequest, MaintenanceResponse, MAINTENANCE_SINCE},
    *,
};

/// An open storage instance. Clones share it. Call [`Storage::shutdown`] to close it deterministically.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<StorageBox>,
    /// The plugin's ABI version (`PluginInfo::abi_version`): which appended calls it has.
    plugin_abi: Arc<str>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Storage")
    }
}

type R<T> = Result<T, StorageError>;

fn rs(s: &str) -> RString {
    RString::from(s)
}

impl Storage {
    pub(crate) fn new(inner: StorageBox, plugin_abi: &str) -> Self {
        Storage { inner: Arc::new(inner), plugin_abi: plugin_abi.into() }
    }

    /// The ABI version of the plugin behind this instance. Calls appended after it answer `Unsupported`.
    pub fn plugin_abi_version(&self) -> &str {
        &self.plugin_abi
    }

    /// `Unsupported`, naming both ABI versions, when the plugin predates the call `method` (added in `since`).
    fn require(&self, method: &str, since: &str) -> R<()> {
        if maintenance::abi_has(&self.plugin_abi, since) {
            Ok(())
        } else {
            Err(maintenance::missing_method(method, since, Some(&self.plugin_abi)))
        }
    }

    /// The plugin's storage object itself: its methods start the call and return the FFI future, for a host
    /// that drives those futures itself (this type's methods are `async fn`s, which call the plugin only when
    /// first polled).
    pub fn raw(&self) -> &StorageBox {
        &self.inner
    }

    pub async fn put_pattern(&self, p: NewPattern) -> R<Pattern> {
        self.inner.put_pattern(p).await.into_result()
    }
    pub async fn get_pattern(&self, name: &str, version: &str) -> R<Pattern> {
        self.inner.get_pattern(rs(name), rs(version)).await.into_result()
    }
    pub async fn get_latest_pattern(&self, name: &str) -> R<Pattern> {
        self.inner.get_latest_pattern(rs(name)).await.into_result()
    }
    pub async fn list_pattern_versions(&self, name: &str) -> R<Vec<Pattern>> {
        self.inner.list_pattern_versions(rs(name)).await.into_result().map(RVec::into_vec)
    }
    pub async fn list_patterns(&self, page: PageRequest) -> R<PatternPage> {
        self.inner.list_patterns(page).await.into_result()
    }
    pub async fn delete_pattern(&self, name: &str, version: &str) -> R<()> {
        self.inner.delete_pattern(rs(name), rs(version)).await.into_result()
    }

    pub async fn create_execution(&self, e: NewExecution) -> R<Execution> {
        self.inner.create_execution(e).await.into_result()
    }
    pub async fn update_execution(&self, id: &str, u: ExecutionUpdate) -> R<Execution> {
        self.inner.update_execution(rs(id), u).await.into_result()
    }
    pub async fn complete_execution(&self, id: &str, c: ExecutionCompletion) -> R<Execution> {
        self.inner.complete_execution(rs(id), c).await.into_result()
    }
    pub async fn get_execution(&self, id: &str) -> R<Execution> {
        self.inner.get_execution(rs(id)).await.into_result()
    }
    pub async fn list_executions(&self, filter: ExecutionFilter, page: PageRequest) -> R<ExecutionPage> {
        self.inner.list_executions(filter, page).await.into_result()
    }
    pub async fn count_executions(&self, filter: ExecutionFilter) -> R<u64> {
        self.inner.count_executions(filter).await.into_result()
    }

    pub async fn append_event(&self, execution_id: &str, e: NewEvent) -> R<ExecutionEvent> {
        self.inner.append_event(rs(execution_id), e).await.into_result()
    }
    pub async fn list_events(&self, execution_id: &str) -> R<Vec<ExecutionEvent>> {
        self.inner.list_events(rs(execution_id)).await.into_result().map(RVec::into_vec)
    }

    pub async fn append_audit(&self, entries: Vec<NewAuditEntry>) -> R<Vec<String>> {
        let ids = self.inner.append_audit(entries.into()).await.into_result()?;
        Ok(ids.into_iter().map(String::from).collect())
    }
    pub async fn query_audit(&self, q: AuditQuery, page: PageRequest) -> R<AuditPage> {
        self.inner.query_audit(q, page).await.into_result()
    }

    pub async fn migration_status(&self) -> R<Vec<MigrationInfo>> {
        self.inner.migration_status().await.into_result().map(RVec::into_vec)
    }
    pub async fn migrate_up(&self) -> R<MigrationReport> {
        self.inner.migrate_up().await.into_result()
    }
    pub async fn migrate_down(&self) -> R<MigrationReport> {
        self.inner.migrate_down().await.into_result()
    }
    pub async fn migrate_to(&self, version: &str) -> R<MigrationReport> {
        self.inner.migrate_to(rs(version)).await.into_result()
    }

    pub async fn mark_migration_applied(&self, version: &str) -> R<MigrationReport> {
        self.inner.mark_migration_applied(rs(version)).await.into_result()
    }

    pub async fn search_executions(&self, query: &str, page: PageRequest) -> R<ExecutionSearchPage> {
        self.inner.search_executions(rs(query), page).await.into_result()
    }
    pub async fn search_patterns(&self, query: &str, page: PageRequest) -> R<PatternSearchPage> {
        self.inner.search_patterns(rs(query), page).await.into_result()
    }

    pub async fn health(&self) -> R<Health> {
        self.inner.health().await.into_result()
    }
    pub async fn ping(&self, mode: PingMode) -> R<()> {
        self.inner.ping(mode).await.into_result()
    }
    /// Runs one maintenance operation (ABI 2.1.0; see [`parallax_storage_abi::maintenance`]). A plugin of an
    /// older ABI answers `Unsupported` naming both versions; an op or document version the plugin does not
    /// support answers `Unsupported` naming it.
    pub async fn maintenance(&self, request: &MaintenanceRequest) -> R<MaintenanceResponse> {
        self.require("maintenance", MAINTENANCE_SINCE)?;
        let text = self.inner.maintenance(request.to_json().into()).await.into_result()?;
        MaintenanceResponse::parse(&text)
    }

    /// The `describe` maintenance op: the plugin's ABI version and the maintenance ops it supports.
    pub async fn describe(&self) -> R<Describe> {
        self.maintenance(&MaintenanceRequest::describe()).await?.result()
    }

    /// Closes pools and stops the plugin's runtime for this instance; later calls fail with `Unavailable`.
    pub async fn shutdown(&self) -> R<()> {
        self.inner.shutdown().await.into_result()
    }
}
