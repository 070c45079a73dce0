//! [`Storage`]: the async client over an open storage instance, in plain Rust types.

use std::{future::Future, pin::Pin, sync::Arc};

use parallax_storage_abi::{
    archive as archive_ops, audit as audit_ops, hosts as hosts_ops, maintenance, metrics as metrics_ops,
    retention as ops, transfer as transfer_ops, StorageBox,
};

use crate::{
    archive,
    convert::{self, answer, id_ffi, rs, ToFfi},
    error::{Error, ErrorKind},
    retention, transfer,
    types::*,
};

/// An open storage instance. Clones share it; every method is an `async fn` that may be awaited on any
/// executor (see the crate docs). Call [`Storage::shutdown`] before the process exits.
///
/// ```no_run
/// # async fn demo(storage: parallax_storage_host::Storage) -> Result<(), parallax_storage_host::Error> {
/// use parallax_storage_host::{ExecutionCompletion, ExecutionStatus, NewExecution};
/// use serde_json::json;
///
/// let run = storage.create_execution(NewExecution::new("summarize", "1.0.0").input(json!({"text": "hi"}))).await?;
/// let done = storage
///     .complete_execution(run.id, ExecutionCompletion::new(ExecutionStatus::Completed).output(json!({"ok": true})))
///     .await?;
/// assert!(done.status.is_final());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Storage {
    inner: Arc<StorageBox>,
    /// The plugin's ABI version: which appended calls it has.
    plugin_abi: Arc<str>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("plugin_abi", &self.plugin_abi).finish()
    }
}

type R<T> = Result<T, Error>;

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
            Err(convert::error(maintenance::missing_method(method, since, Some(&self.plugin_abi))))
        }
    }

    // ----- patterns

    /// Stores a new pattern version; `Conflict` if name and version exist (versions are immutable).
    pub async fn put_pattern(&self, pattern: NewPattern) -> R<Pattern> {
        answer(self.inner.put_pattern(pattern.to_ffi()).await)
    }
    /// Pattern `name` at `version`.
    pub async fn get_pattern(&self, name: &str, version: &str) -> R<Pattern> {
        answer(self.inner.get_pattern(rs(name), rs(version)).await)
    }
    /// The highest semantic version of `name`; ties broken by the newest `created_at`.
    pub async fn get_latest_pattern(&self, name: &str) -> R<Pattern> {
        answer(self.inner.get_latest_pattern(rs(name)).await)
    }
    /// All versions of `name`, highest semantic version first.
    pub async fn list_pattern_versions(&self, name: &str) -> R<Vec<Pattern>> {
        answer(self.inner.list_pattern_versions(rs(name)).await)
    }
    /// The latest version of every pattern, by name.
    pub async fn list_patterns(&self, page: Page) -> R<Listed<Pattern>> {
        answer(self.inner.list_patterns(page.to_ffi()).await)
    }
    /// Deletes pattern `name` at `version`.
    pub async fn delete_pattern(&self, name: &str, version: &str) -> R<()> {
        answer(self.inner.delete_pattern(rs(name), rs(version)).await)
    }

    // ----- executions

    /// Creates an execution (`Pending` or `Running`).
    pub async fn create_execution(&self, execution: NewExecution) -> R<Execution> {
        answer(self.inner.create_execution(execution.to_ffi()).await)
    }
    /// Changes fields of a pending or running execution.
    pub async fn update_execution(&self, id: Uuid, update: ExecutionUpdate) -> R<Execution> {
        answer(self.inner.update_execution(id_ffi(id), update.to_ffi()).await)
    }
    /// Sets a final status, `completed_at` and `duration_ms`.
    pub async fn complete_execution(&self, id: Uuid, completion: ExecutionCompletion) -> R<Execution> {
        answer(self.inner.complete_execution(id_ffi(id), completion.to_ffi()).await)
    }
    /// Execution `id`.
    pub async fn get_execution(&self, id: Uuid) -> R<Execution> {
        answer(self.inner.get_execution(id_ffi(id)).await)
    }
    /// One page of the executions matching `filter`, newest first (`started_at`, then id).
    pub async fn list_executions(&self, filter: ExecutionFilter, page: Page) -> R<Listed<Execution>> {
        answer(self.inner.list_executions(filter.to_ffi(), page.to_ffi()).await)
    }
    /// How many executions match `filter`.
    pub async fn count_executions(&self, filter: ExecutionFilter) -> R<u64> {
        answer(self.inner.count_executions(filter.to_ffi()).await)
    }

    // ----- events

    /// Appends an agent assignment or step result to a pending or running execution.
    pub async fn append_event(&self, execution_id: Uuid, event: NewEvent) -> R<ExecutionEvent> {
        answer(self.inner.append_event(id_ffi(execution_id), event.to_ffi()).await)
    }
    /// Every event of an execution, in append order.
    pub async fn list_events(&self, execution_id: Uuid) -> R<Vec<ExecutionEvent>> {
        answer(self.inner.list_events(id_ffi(execution_id)).await)
    }

    // ----- audit

    /// Appends all entries atomically; returns their ids in order.
    pub async fn append_audit(&self, entries: Vec<NewAuditEntry>) -> R<Vec<Uuid>> {
        let ffi = entries.into_iter().map(ToFfi::to_ffi).collect();
        answer(self.inner.append_audit(ffi).await)
    }
    /// One page of the audit entries matching `query`, newest first.
    pub async fn query_audit(&self, query: AuditQuery, page: Page) -> R<Listed<AuditEntry>> {
        answer(self.inner.query_audit(query.to_ffi(), page.to_ffi()).await)
    }

    // ----- search

    /// Executions whose input, output or error contain every word of `query`, best match first.
    pub async fn search_executions(&self, query: &str, page: Page) -> R<Listed<ExecutionHit>> {
        answer(self.inner.search_executions(rs(query), page.to_ffi()).await)
    }
    /// Pattern versions whose name, description or definition contain every word of `query`, best match first.
    pub async fn search_patterns(&self, query: &str, page: Page) -> R<Listed<PatternHit>> {
        answer(self.inner.search_patterns(rs(query), page.to_ffi()).await)
    }

    // ----- every page

    /// Every execution matching `filter`, fetched `page_size` at a time (0: the plugin's default).
    ///
    /// ```no_run
    /// # async fn demo(storage: parallax_storage_host::Storage) -> Result<(), parallax_storage_host::Error> {
    /// use parallax_storage_host::ExecutionFilter;
    ///
    /// let mut pages = storage.executions(ExecutionFilter::default().tag("nightly"), 200);
    /// while let Some(batch) = pages.next_page().await? {
    ///     for e in batch {
    ///         println!("{} {}", e.id, e.status);
    ///     }
    /// }
    /// // Or all at once:
    /// let all = storage.executions(ExecutionFilter::default(), 200).collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn executions(&self, filter: ExecutionFilter, page_size: u32) -> Pages<Execution> {
        let s = self.clone();
        Pages::new(page_size, move |page| {
            let (s, filter) = (s.clone(), filter.clone());
            Box::pin(async move { s.list_executions(filter, page).await })
        })
    }

    /// The latest version of every pattern, fetched `page_size` at a time.
    pub fn patterns(&self, page_size: u32) -> Pages<Pattern> {
        let s = self.clone();
        Pages::new(page_size, move |page| {
            let s = s.clone();
            Box::pin(async move { s.list_patterns(page).await })
        })
    }

    /// Every audit entry matching `query`, fetched `page_size` at a time.
    pub fn audit_entries(&self, query: AuditQuery, page_size: u32) -> Pages<AuditEntry> {
        let s = self.clone();
        Pages::new(page_size, move |page| {
            let (s, query) = (s.clone(), query.clone());
            Box::pin(async move { s.query_audit(query, page).await })
        })
    }

    // ----- migrations

    /// Every migration and whether it is applied.
    pub async fn migration_status(&self) -> R<Vec<MigrationInfo>> {
        answer(self.inner.migration_status().await)
    }
    /// Applies every pending migration.
    pub async fn migrate_up(&self) -> R<MigrationReport> {
        answer(self.inner.migrate_up().await)
    }
    /// Reverts the newest applied migration.
    pub async fn migrate_down(&self) -> R<MigrationReport> {
        answer(self.inner.migrate_down().await)
    }
    /// Applies or reverts migrations until `version` (a full version or a unique prefix; `0`: none) is the
    /// newest applied.
    pub async fn migrate_to(&self, version: &str) -> R<MigrationReport> {
        answer(self.inner.migrate_to(rs(version)).await)
    }
    /// Records `version` as applied without running it: the operator fixed the schema by hand.
    pub async fn mark_migration_applied(&self, version: &str) -> R<MigrationReport> {
        answer(self.inner.mark_migration_applied(rs(version)).await)
    }

    // ----- operations

    /// Backend, version, location, latency, schema version and pending migrations.
    pub async fn health(&self) -> R<Health> {
        answer(self.inner.health().await)
    }
    /// A call that does nothing in the plugin (or panics there, to test panic handling).
    pub async fn ping(&self, mode: PingMode) -> R<()> {
        answer(self.inner.ping(mode.to_ffi()).await)
    }

    /// Runs one maintenance operation (ABI 2.1.0). A plugin of an older ABI answers `Unsupported` naming both
    /// versions; an op or document version the plugin does not support answers `Unsupported` naming it.
    pub async fn maintenance(&self, request: &MaintenanceRequest) -> R<MaintenanceResponse> {
        self.require("maintenance", maintenance::MAINTENANCE_SINCE)?;
        let text: convert::Text =
            answer(self.inner.maintenance(convert::maintenance_request(request)).await)?;
        convert::maintenance_response(&text.0)
    }

    /// The `describe` maintenance op: the plugin's ABI version and the maintenance ops it supports.
    pub async fn describe(&self) -> R<Describe> {
        let response = self.maintenance(&MaintenanceRequest::describe()).await?;
        convert::describe(&response)
    }

    /// Runs maintenance op `op` version `version` with typed params and result (the ABI crate's documents).
    async fn op<P: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        version: u32,
        params: &P,
    ) -> R<T> {
        let params = serde_json::to_value(params)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot encode the {op} request: {e}")))?;
        let response = self.maintenance(&MaintenanceRequest::new(op, version, params)).await?;
        serde_json::from_value(response.result).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("the plugin's {op} result is not what this host expects: {e}"),
            )
        })
    }

    /// Removes old executions (with their events and search entries) or old audit entries now, or with
    /// `dry_run` reports what would go (the `cleanup` maintenance op, version 1). A cleanup that would remove
    /// every row needs `confirm_all`. On failure the error names what was already removed.
    pub async fn cleanup(&self, params: &retention::CleanupParams) -> R<retention::CleanupReport> {
        self.op(ops::CLEANUP, 1, params).await
    }

    /// The retention policy and schedule, the next scheduled run and the recorded runs (`retention_status`).
    pub async fn retention_status(&self) -> R<retention::RetentionStatus> {
        self.op(ops::RETENTION_STATUS, 1, &serde_json::Value::Null).await
    }

    /// Runs the configured retention policy now (`retention_run`); with a tick, as that tick's scheduled run.
    pub async fn retention_run(
        &self,
        params: &retention::RetentionRunParams,
    ) -> R<retention::RetentionRunResult> {
        self.op(ops::RETENTION_RUN, 1, params).await
    }

    /// Archives old executions (with their events) or old audit entries to a destination, verifies what was
    /// stored, then deletes exactly the archived rows unless `keep` (the `archive` maintenance op, version 1).
    /// An unfinished archive run to the same destination is finished first.
    pub async fn archive(&self, params: &archive::ArchiveParams) -> R<archive::ArchiveReport> {
        self.op(archive_ops::ARCHIVE, 1, params).await
    }

    /// Checks every manifest and object under a source: sizes, SHA-256, gzip streams, row counts
    /// (`archive_verify`). Changes nothing.
    pub async fn archive_verify(&self, params: &archive::VerifyParams) -> R<archive::VerifyReport> {
        self.op(archive_ops::ARCHIVE_VERIFY, 1, params).await
    }

    /// Verifies an archive, then imports it into this storage, keeping ids and times and skipping rows already
    /// present (`restore`). A damaged object is refused by name before anything is written.
    pub async fn restore(&self, params: &archive::RestoreParams) -> R<archive::RestoreReport> {
        self.op(archive_ops::RESTORE, 1, params).await
    }

    /// Copies everything this storage holds (every pattern version, every execution in any status with its
    /// events, every audit entry; ids and times kept) into the storage described by `params.target` (a
    /// resolved `storage` section as JSON text, opened by the plugin itself), then verifies counts and a
    /// content checksum per table on both sides (the `copy` maintenance op, version 1). A non-empty target is
    /// refused unless `merge`; a row present with different content is a conflict, never overwritten. Rows
    /// newer than the snapshot cut are counted, not copied. Resumable: the same call again finishes a killed
    /// run, or catches up with what was written since a finished one. `dry_run` writes nothing.
    pub async fn copy(&self, params: &transfer::CopyParams) -> R<transfer::TransferReport> {
        self.op(transfer_ops::COPY, 1, params).await
    }

    /// Writes everything this storage holds, in the archive's format plus a `patterns` table, under a
    /// destination (`s3://…`, `file:///…` or an absolute path), with `export.json` written last as the
    /// completion marker (the `export` maintenance op, version 1). Changes nothing in the storage.
    pub async fn export(&self, params: &transfer::ExportParams) -> R<transfer::ExportReport> {
        self.op(transfer_ops::EXPORT, 1, params).await
    }

    /// Imports an export (or a plain archive) into this storage, verified first, with the same refusal of a
    /// non-empty storage (unless `merge`), conflicts, resume and verification as [`Storage::copy`] (the
    /// `import` maintenance op, version 1).
    pub async fn import(&self, params: &transfer::ImportParams) -> R<transfer::TransferReport> {
        self.op(transfer_ops::IMPORT, 1, params).await
    }

    /// A consistent copy of this storage taken while it is written: a SQLite file (online, checked with
    /// `PRAGMA integrity_check`) or a file store's tree (the `backup` maintenance op, version 1). PostgreSQL
    /// answers `Unsupported` naming `pg_dump`. The destination is an absolute path that does not exist yet.
    pub async fn backup(&self, params: &transfer::BackupParams) -> R<transfer::BackupReport> {
        self.op(transfer_ops::BACKUP, 1, params).await
    }

    /// Walks the tamper-evident audit chain (`audit-verify`): entries checked, the head and checkpoint, and
    /// every break found (altered, missing, inserted, reordered, head). A break is a finding in the report,
    /// not an error; a plugin built before the chain answers `Unsupported`.
    pub async fn audit_verify(
        &self,
        params: &audit_ops::AuditVerifyParams,
    ) -> R<audit_ops::AuditVerifyReport> {
        self.op(audit_ops::AUDIT_VERIFY, 1, params).await
    }

    /// The plugin's metrics in the Prometheus text exposition format (the `metrics` maintenance op), with the
    /// content type to serve it with. A control plane appends `text` to its own `/metrics`. A scrape never opens
    /// a connection; a plugin built before metrics existed answers `Unsupported`.
    pub async fn metrics(&self) -> R<metrics_ops::MetricsText> {
        self.op(metrics_ops::METRICS, 1, &metrics_ops::MetricsParams::default()).await
    }

    /// [`Storage::metrics`], only the exposition text.
    pub async fn metrics_text(&self) -> R<String> {
        Ok(self.metrics().await?.text)
    }

    /// Every database host this storage object talks to, probed now (the `hosts` maintenance op): the
    /// PostgreSQL primary and each read replica with its role, reachability, latency, replay lag, routing state
    /// and reads served; SQLite and the file store answer one `local` row. A plugin built before read replicas
    /// answers `Unsupported` (check [`Error::kind`]), so a caller can fall back to [`Storage::health`].
    pub async fn hosts(&self) -> R<hosts_ops::HostsReport> {
        self.op(hosts_ops::HOSTS, 1, &hosts_ops::HostsParams::default()).await
    }

    /// Waits for queued writes, closes pools and stops the plugin's runtime for this instance; later calls fail
    /// with `Unavailable`. Call it before the process exits: writes still queued at exit are lost.
    pub async fn shutdown(&self) -> R<()> {
        answer(self.inner.shutdown().await)
    }
}

type Fetch<T> = Box<dyn FnMut(Page) -> Pin<Box<dyn Future<Output = R<Listed<T>>> + Send>> + Send>;

/// Walks every page of a list ([`Storage::executions`], [`Storage::patterns`], [`Storage::audit_entries`]):
/// each [`Pages::next_page`] fetches the next page with the previous page's cursor.
pub struct Pages<T> {
    fetch: Fetch<T>,
    next: Option<Page>,
}

impl<T> std::fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages").field("next", &self.next).finish()
    }
}

impl<T> Pages<T> {
    fn new(
        page_size: u32,
        fetch: impl FnMut(Page) -> Pin<Box<dyn Future<Output = R<Listed<T>>> + Send>> + Send + 'static,
    ) -> Self {
        Pages { fetch: Box::new(fetch), next: Some(Page::first(page_size)) }
    }

    /// The next page's items; `None` after the last page. An empty list yields one empty page.
    pub async fn next_page(&mut self) -> R<Option<Vec<T>>> {
        let Some(page) = self.next.take() else { return Ok(None) };
        let limit = page.limit;
        let listed = (self.fetch)(page).await?;
        self.next = listed.next_cursor.map(|c| Page::first(limit).after(c));
        Ok(Some(listed.items))
    }

    /// Every remaining item.
    pub async fn collect(mut self) -> R<Vec<T>> {
        let mut all = Vec::new();
        while let Some(items) = self.next_page().await? {
            all.extend(items);
        }
        Ok(all)
    }
}
